"""The HTML report in a real browser: headless Chromium renders it, and the rendered DOM shows every word as text,
with its relevance on hover, and no script from a document ever runs. Needs the Debian package `chromium`
(.ci/run installs it and sets LRPTEXT_REQUIRE_CHROMIUM=1, which turns a missing browser into a failure)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lrptext.text import render
from lrptext.text.classifier import TextClassifier

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("LRPTEXT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("LRPTEXT_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return CHROMIUM


def rendered_dom(chromium: str, page: str, tmp_path) -> str:
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                           path.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_report_renders_in_chromium_and_no_document_script_runs(chromium, tmp_path):
    hostile = ('<script>document.body.setAttribute("data-pwned", "yes")</script> '
               '<img src=x onerror="document.body.setAttribute(\'data-pwned\', \'img\')"> free money now')
    docs = TextClassifier.load("default").explain([hostile, "Meeting notes for the kernel patch review"])
    dom = rendered_dom(chromium, render.html_report(docs), tmp_path)
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]  # no script or handler ran
    assert "<img" not in dom and "&lt;script&gt;document.body.setAttribute" in dom  # shown as text
    assert dom.count('class="w"') == len(docs[0].words) + len(docs[1].words)
    assert dom.count('<section class="doc"') == 2
    assert 'title="relevance ' in dom
    assert f'prediction: <span class="label prediction">{docs[0].prediction}</span>' in dom
