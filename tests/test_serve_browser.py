"""The explorer page of `lrptext serve` in a real browser: the command line starts a server with no --model (the
bundled models), and Playwright drives the Debian chromium headless through it: type a document, see its words
highlighted, switch composite, target and contrast, compare side by side, move with the keyboard, read a corpus's
top words and explain an image. A screenshot is checked structurally: the words' pixels are red where the relevance
is positive and blue where it is negative.

Needs the Debian package `chromium` (.ci/run installs it and sets LRPTEXT_REQUIRE_CHROMIUM=1, which turns a missing
browser into a failure) and the test extra's playwright (its own browsers are never downloaded)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

from lrptext.text.render import BLUE, RED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
HOSTILE = ('Subject: FREE money!!! <script>document.body.dataset.pwned = "script"</script>\n\n'
           '<img src=x onerror="document.body.dataset.pwned = \'img\'"> Click here to claim your prize. '
           "Reply to the list if you wrote the patch \U0001F600 café.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(*options: str):
    """`lrptext serve` with these options on a free port, as a user starts it; its URL once it answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "lrptext.cli", "serve", "--port", str(port), *options],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if json.load(response)["status"] == "ok":
                    break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"lrptext serve did not start: {process.communicate()[0][-3000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    output = process.communicate(timeout=30)[0]
    assert "Traceback" not in output, output[-3000:]


@pytest.fixture(scope="module")
def server():
    with serving() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        if os.environ.get("LRPTEXT_REQUIRE_CHROMIUM") == "1":
            pytest.fail("LRPTEXT_REQUIRE_CHROMIUM=1 but no chromium on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


@contextmanager
def opened(browser, server: str):
    """The explorer page of `server`, ready; no script error, failed request or request elsewhere on the way."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
    page.on("request", lambda request: None if request.url.startswith((server, "data:", "blob:"))
            else errors.append(f"outside request: {request.url}"))
    page.goto(server + "/")
    page.wait_for_selector("#status:text-is('Ready.')")
    yield page
    context.close()
    assert not errors, errors


@pytest.fixture
def page(browser, server):
    with opened(browser, server) as page:
        yield page


def explained(page) -> None:
    # every change sets aria-busy before it awaits the server (the page's CSP forbids wait_for_function's eval)
    page.wait_for_selector("#results[aria-busy='false']")
    status = page.inner_text("#status")
    assert status == "Done.", status


def words(page, pane: str) -> list[dict]:
    return page.eval_on_selector_all(f"{pane} .doc .w", """spans => spans.map(s => ({
        text: s.textContent, relevance: Number(s.dataset.relevance), title: s.title,
        colour: getComputedStyle(s).backgroundColor, tabindex: s.getAttribute('tabindex')}))""")


def api(server: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(server + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def rgba(css: str) -> tuple[tuple[int, int, int], float]:
    values = [float(v) for v in re.findall(r"[\d.]+", css)]
    return tuple(int(v) for v in values[:3]), (values[3] if len(values) == 4 else 1.0)


def test_a_typed_document_gets_its_words_highlighted_as_text(page, server):
    page.fill("#text", HOSTILE)
    page.press("#text", "Control+Enter")
    explained(page)
    assert page.evaluate("document.body.dataset.pwned") is None  # no script or handler from the document ran
    assert page.locator("#pane-a .doc img, #pane-a .doc script").count() == 0
    assert page.inner_text("#pane-a .doc") == HOSTILE  # every character shown as text, emoji and accents included
    shown = words(page, "#pane-a")
    assert [w["text"] for w in shown] == HOSTILE.split()
    answer = api(server, "/v1/explain", {"texts": [HOSTILE]})
    doc = answer["documents"][0]
    assert [w["relevance"] for w in shown] == pytest.approx([w["relevance"] for w in doc["words"]], rel=1e-6)
    assert all(w["title"].startswith("relevance ") for w in shown)
    assert page.inner_text("#pane-a .prediction .prediction") == doc["prediction"]
    rows = page.eval_on_selector_all("#pane-a .probabilities tr", "rows => rows.map(r => r.innerText)")
    assert [r.split("\t")[0] for r in rows] == answer["labels"]
    assert sum(float(r.split("\t")[-1]) for r in rows) == pytest.approx(1.0, abs=2e-3)
    # the report's colour scale: red for, blue against, opacity |r| / max |r|
    scale = max(abs(w["relevance"]) for w in shown)
    for w in shown:
        rgb, alpha = rgba(w["colour"])
        if w["relevance"] != 0:
            assert rgb == (RED if w["relevance"] > 0 else BLUE), w
            assert alpha == pytest.approx(abs(w["relevance"]) / scale, abs=0.01), w
    assert page.is_visible("#layers") and page.inner_text("#layers tbody tr:first-child td:first-child") == "fc"


def test_the_screenshot_shows_red_for_and_blue_against(page, tmp_path):
    page.fill("#text", HOSTILE)
    page.click("#explain")
    explained(page)
    shown = words(page, "#pane-a")
    strongest = {sign: max(range(len(shown)), key=lambda i: sign * shown[i]["relevance"]) for sign in (1, -1)}
    assert shown[strongest[1]]["relevance"] > 0 > shown[strongest[-1]]["relevance"]
    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    for sign, i in strongest.items():
        box = page.locator("#pane-a .doc .w").nth(i).bounding_box()
        crop = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
        pixels = Counter(map(tuple, np.asarray(crop).reshape(-1, 3).tolist()))
        background, _ = pixels.most_common(1)[0]  # the word's background, not its glyphs
        r, g, b = background
        assert (r > b + 60) if sign > 0 else (b > r + 60), (sign, background)
    # structure: both panes, the legend, the probabilities and the layer table are on the page
    for selector in ("#pane-a .doc .w", "#pane-b", ".legend .bar", "#pane-a .probabilities tr", "#layers tbody tr"):
        assert page.locator(selector).first.is_visible(), selector


def test_switching_composite_target_and_contrast_explains_again(page, server):
    page.fill("#text", HOSTILE)
    page.click("#explain")
    explained(page)
    page.select_option("#composite", "epsilon")
    explained(page)
    assert page.inner_text("#pane-a h2") == "LRP · epsilon"
    reference = api(server, "/v1/explain", {"texts": [HOSTILE], "composite": "epsilon"})["documents"][0]
    assert [w["relevance"] for w in words(page, "#pane-a")] == \
        pytest.approx([w["relevance"] for w in reference["words"]], rel=1e-6)
    assert page.is_disabled("#contrast")
    page.select_option("#target", "ham")
    explained(page)
    assert page.inner_text("#pane-a .prediction .target") == "ham"
    assert page.is_enabled("#contrast")
    page.select_option("#contrast", "spam")
    explained(page)
    assert "rather than spam" in page.inner_text("#pane-a .prediction")
    reference = api(server, "/v1/explain", {"texts": [HOSTILE], "composite": "epsilon", "target": "ham",
                                            "contrast": "spam"})["documents"][0]
    assert [w["relevance"] for w in words(page, "#pane-a")] == \
        pytest.approx([w["relevance"] for w in reference["words"]], rel=1e-6)


@pytest.mark.parametrize("compare, title, body", [
    ("method:gi", "gradient × input", {"method": "gi"}),
    ("method:ig", "integrated gradients", {"method": "ig"}),
    ("composite:epsilon_plus", "LRP · epsilon_plus", {"composite": "epsilon_plus"}),
])
def test_two_explanations_side_by_side(page, server, compare, title, body):
    page.fill("#text", HOSTILE)
    page.select_option("#compare", compare)
    page.click("#explain")
    explained(page)
    assert page.inner_text("#pane-a h2") == "LRP · epsilon" and page.inner_text("#pane-b h2") == title
    left, right = words(page, "#pane-a"), words(page, "#pane-b")
    assert [w["text"] for w in left] == [w["text"] for w in right] == HOSTILE.split()
    reference = api(server, "/v1/explain", {"texts": [HOSTILE], **body})["documents"][0]
    assert [w["relevance"] for w in right] == pytest.approx([w["relevance"] for w in reference["words"]], rel=1e-6)
    if compare == "method:gi":  # ε-LRP is gradient × input (up to ε) on a ReLU, max-pooling CNN
        assert [w["relevance"] for w in left] == pytest.approx([w["relevance"] for w in right], rel=1e-3, abs=1e-5)
    else:
        assert [w["relevance"] for w in left] != pytest.approx([w["relevance"] for w in right], rel=1e-3)
    a, b = page.locator("#pane-a").bounding_box(), page.locator("#pane-b").bounding_box()
    assert a["y"] == b["y"] and a["x"] + a["width"] <= b["x"]  # beside each other


def test_the_keyboard_reaches_everything_and_walks_the_words(page):
    page.fill("#text", HOSTILE)
    page.click("#explain")
    explained(page)
    reached = []
    page.focus("#model")
    for _ in range(12):
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.className"))
        page.keyboard.press("Tab")
    assert reached[:7] == ["model", "composite", "target", "compare", "text", "text-file", "explain"]
    page.focus("#pane-a .doc .w[tabindex='0']")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    focused = page.evaluate("[document.activeElement.textContent, document.activeElement.dataset.index]")
    assert focused == [HOSTILE.split()[2], "2"]
    inspect = page.inner_text("#pane-a .inspect")
    assert inspect.startswith(f"“{HOSTILE.split()[2]}”: relevance ")
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.textContent") == HOSTILE.split()[-1]


def test_nothing_moves_while_an_explanation_loads(page):
    rects = """() => ['#query', '.legend', '#pane-a', '#pane-b', '#layers', '#corpus'].map(s => {
        const r = document.querySelector(s).getBoundingClientRect(); return [s, r.x, r.y, r.width, r.height]; })"""
    page.fill("#text", HOSTILE)
    for _ in range(2):  # the first explanation and a second one over it
        before, during, busy = page.evaluate(f"""() => {{
            const rects = {rects};
            const before = rects();
            document.querySelector('#explain').click();  // sets the loading state before it awaits the server
            return [before, rects(), document.querySelector('#results').getAttribute('aria-busy')];
        }}""")
        assert busy == "true" and during == before
        explained(page)


def test_a_corpus_gives_top_words_per_class_linked_to_their_documents(page, server):
    records = [{"text": "FREE money!!! Click here to claim your FREE prize", "label": "spam"},
               {"text": "Limited offer: click here, free shipping on your order", "label": "spam"},
               {"text": "Re: [ILUG] kernel patch\n> wrote: it works on my router", "label": "ham"},
               {"text": "Re: the list meeting is moved to Friday <b>thanks</b>", "label": "ham"}]
    data = "\n".join(json.dumps(r) for r in records).encode()
    page.set_input_files("#corpus-file", {"name": "mails.jsonl", "mimeType": "application/json", "buffer": data})
    page.fill("#label-field", "label")
    page.click("#corpus-run")
    page.wait_for_selector("#corpus-status:has-text('documents explained')")
    assert page.inner_text("#corpus-status").startswith("4 documents explained by spam-cnn")
    headings = page.eval_on_selector_all("#corpus-results h3", "hs => hs.map(h => h.textContent)")
    assert headings == ["ham (2 documents)", "spam (2 documents)"]
    reference = api(server, "/v1/corpus", {"data": data.decode(), "format": "jsonl", "label_field": "label"})
    spam_words = page.eval_on_selector_all("#corpus-results > div:nth-child(2) li button",
                                           "bs => bs.map(b => b.textContent)")
    assert [w.split(" ")[0] for w in spam_words] == [w["word"] for w in reference["classes"][1]["words"]]
    page.click("#corpus-results > div:nth-child(2) li:first-child button")
    linked = page.eval_on_selector_all("#corpus-documents li button", "bs => bs.map(b => b.textContent)")
    first = reference["classes"][1]["words"][0]
    assert len(linked) == len(first["documents"])
    page.click("#corpus-documents li:first-child button")
    explained(page)
    chosen = reference["documents"][first["documents"][0]]
    assert page.input_value("#text") == chosen["text"]
    assert page.inner_text("#pane-a .prediction .target") == "spam"


def test_an_image_model_explains_an_uploaded_image(page, server):
    page.select_option("#model", "fashion-cnn")
    assert page.is_hidden("#text-input") and page.is_visible("#image-input")
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 8:20] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    page.set_input_files("#image-file", {"name": "block.png", "mimeType": "image/png", "buffer": buffer.getvalue()})
    page.wait_for_selector("#status:text-is('Done.')")  # the file is read before the explanation starts
    explained(page)
    assert page.locator("#pane-a .image canvas").count() == 1 and page.locator("#pane-a .image img").count() == 1
    answer = api(server, "/v1/explain-image", {"images": [base64.b64encode(buffer.getvalue()).decode()],
                                               "model": "fashion-cnn"})
    relevance = np.asarray(answer["results"][0]["relevance"])
    drawn = np.asarray(page.evaluate("""() => { const c = document.querySelector('#pane-a .image canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")).reshape(28, 28, 4)
    strong = np.abs(relevance) > 0.2 * np.abs(relevance).max()
    red, blue = drawn[..., 0].astype(int), drawn[..., 2].astype(int)
    assert strong.any()
    assert ((red > blue)[strong & (relevance > 0)]).all() and ((blue > red)[strong & (relevance < 0)]).all()
    assert page.inner_text("#pane-a .prediction .prediction") == answer["results"][0]["prediction"]


def test_an_opened_text_file_is_explained(page):
    text = "Re: [ILUG] the patch\n> wrote: thanks, it works"
    page.set_input_files("#text-file", {"name": "mail.txt", "mimeType": "text/plain", "buffer": text.encode()})
    page.wait_for_selector("#status:text-is('Done.')")  # the file is read before the explanation starts
    explained(page)
    assert page.input_value("#text") == text
    assert [w["text"] for w in words(page, "#pane-a")] == text.split()


# -- a Hugging Face model folder ------------------------------------------------------------------------------------
LONG = "f r e e m o n e y n o w"  # twelve WordPiece pieces: three windows of six


@pytest.fixture(scope="module")
def transformer_server(tmp_path_factory):
    pytest.importorskip("transformers")
    from hf_folders import bert, save_folder, wordpiece_tokenizer

    tokenizer = wordpiece_tokenizer(max_length=8)  # six pieces per window beside [CLS] and [SEP]
    folder = save_folder(bert(tokenizer), tokenizer, tmp_path_factory.mktemp("models") / "tiny-bert")
    with serving("--model", str(folder)) as url:
        yield url


def shown_layers(page) -> list[tuple[str, float]]:
    rows = page.eval_on_selector_all("#layers tbody tr", "rows => rows.map(r => [r.cells[0].textContent, "
                                                         "r.cells[1].textContent])")
    return [(name, float(value)) for name, value in rows]


def test_a_transformer_folder_offers_its_composites_and_shows_its_layer_totals(browser, transformer_server):
    with opened(browser, transformer_server) as page:
        def values(select: str) -> list[str]:
            return page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)")

        assert page.input_value("#model") == "tiny-bert" and "bert" in page.inner_text("#model")
        assert values("#composite") == ["attnlrp", "cp_lrp"] and page.input_value("#composite") == "attnlrp"
        assert values("#compare") == ["", "composite:cp_lrp"]  # no gradient baselines for a transformer
        room = page.locator("#layers").bounding_box()
        assert page.is_visible("#layers") and room["height"] > 0  # its room is kept before the first explanation

        for composite in ("attnlrp", "cp_lrp"):
            if composite != "attnlrp":
                page.select_option("#composite", composite)
            else:
                page.fill("#text", LONG)
                page.click("#explain")
            explained(page)
            answer = api(transformer_server, "/v1/explain", {"texts": [LONG], "composite": composite,
                                                             "layers": True})
            doc, totals = answer["documents"][0], answer["layers"][0]
            assert [w["text"] for w in words(page, "#pane-a")] == LONG.split()
            assert [w["relevance"] for w in words(page, "#pane-a")] == \
                pytest.approx([w["relevance"] for w in doc["words"]], rel=1e-6)
            assert "read in 3 windows" in page.inner_text("#pane-a .scale") and "[CLS]" in page.inner_text(
                "#pane-a .scale")
            shown = shown_layers(page)
            assert [name for name, _ in shown] == [t["layer"] for t in totals] and shown[0][0] == "classifier"
            # as the page writes them: 4 decimals, or 4 significant digits below 1e-3
            assert [value for _, value in shown] == [pytest.approx(t["relevance"], rel=1e-3, abs=5.1e-5)
                                                     for t in totals]
            assert page.locator("#layers").bounding_box() == room  # nothing moved, however many layers

        # a transformer has many layers: the table scrolls in its own region, which the keyboard reaches and moves
        region = page.locator("#layers .layer-table")
        assert region.evaluate("r => r.scrollHeight > r.clientHeight && r.scrollTop === 0")
        region.focus()
        assert page.evaluate("document.activeElement.getAttribute('role')") == "region"
        page.keyboard.press("End")
        at_end = "r => r.scrollTop > 0 && r.scrollTop + r.clientHeight >= r.scrollHeight - 1"
        deadline = time.monotonic() + 5  # Chromium scrolls smoothly
        while not region.evaluate(at_end) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert region.evaluate(at_end), region.evaluate("r => [r.scrollTop, r.clientHeight, r.scrollHeight]")
