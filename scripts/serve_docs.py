"""Regenerates docs/serve.png: the page of `lrptext serve` (bundled models) in headless Chromium, with a test e-mail
explained by LRP beside gradient x input and the relevance per layer.

    python scripts/serve_docs.py [--chromium /usr/bin/chromium]

Needs the test extra (playwright, driving the Debian chromium; nothing is downloaded)."""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from lrptext.cli import _sample_emails

DOCS = Path(__file__).resolve().parent.parent / "docs"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=DOCS / "serve.png")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "lrptext.cli", "serve", "--port", str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                    json.load(response)
                break
            except OSError:
                time.sleep(0.3)
        from playwright.sync_api import sync_playwright

        email = _sample_emails(2)[1]  # "Free money from the government!"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1560})
            page.goto(url + "/")
            page.wait_for_selector("#status:text-is('Ready.')")
            page.fill("#text", email)
            page.select_option("#compare", "method:gi")
            page.click("#explain")
            page.wait_for_selector("#results[aria-busy='false']")
            page.evaluate("document.querySelector('#text').scrollTop = 0")
            page.hover("#pane-a .doc .w >> nth=6")
            page.screenshot(path=str(args.out), full_page=False)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
