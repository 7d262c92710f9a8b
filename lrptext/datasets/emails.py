"""Raw RFC 822 e-mails to the text a reader sees: the subject and the text body (HTML reduced to its text)."""

from __future__ import annotations

import email
import email.header
import html
from html.parser import HTMLParser

MAX_CHARACTERS = 20_000


class _TextOfHtml(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextOfHtml()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:  # malformed markup: fall back to unescaped text
        return html.unescape(markup)
    return "".join(parser.parts)


def _decode(payload: bytes, charset: str | None) -> str:
    try:
        return payload.decode(charset or "latin-1", errors="replace")
    except LookupError:  # an unknown charset name
        return payload.decode("latin-1", errors="replace")


def _subject(message: email.message.Message) -> str:
    raw = message.get("Subject", "") or ""
    try:
        pieces = email.header.decode_header(str(raw))
    except Exception:
        return str(raw)
    return "".join(_decode(p, c) if isinstance(p, bytes) else p for p, c in pieces)


def email_text(raw: str) -> str:
    """Subject, a blank line, then the text/plain parts (or the text of text/html parts when there is none)."""
    message = email.message_from_string(raw)
    plain: list[str] = []
    markup: list[str] = []
    for part in message.walk():
        if part.get_content_maintype() == "multipart":
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        text = _decode(payload, part.get_content_charset()) if isinstance(payload, bytes) else str(part.get_payload())
        (plain if kind == "text/plain" else markup).append(text)
    body = "\n".join(plain) if plain else "\n".join(html_to_text(m) for m in markup)
    return (_subject(message).strip() + "\n\n" + body.strip())[:MAX_CHARACTERS]
