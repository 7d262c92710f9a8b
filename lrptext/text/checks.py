"""What a document must be to be explained; each refusal says why and what to do."""

from __future__ import annotations

MAX_CHARACTERS = 1_000_000


def check_text(text: object, index: int = 0) -> str:
    if not isinstance(text, str):
        raise TypeError(f"document {index} must be a str, got {type(text).__name__}")
    if len(text) > MAX_CHARACTERS:
        raise ValueError(f"document {index} has {len(text):,} characters; lrptext explains documents of up to "
                         f"{MAX_CHARACTERS:,} (split it into parts, e.g. paragraphs, and explain each)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"document {index} is not valid text (undecodable bytes near character {error.start}); "
                         "decode it with the right encoding first") from error
    if not text.strip():
        raise ValueError(f"document {index} is empty; there is nothing to explain")
    return text
