"""What one request may ask of the server; each limit is refused with a 4xx that names it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 2 * 1024 * 1024  # a request's body (documents, an uploaded corpus or image), in bytes
    max_documents: int = 64                # documents in one POST /v1/explain
    max_characters: int = 100_000          # characters in one document
    max_corpus_documents: int = 200        # records in one uploaded corpus
    max_queued_documents: int = 2048       # documents waiting for the kernels before new requests get 503
    timeout_s: float = 30.0                # a request's time in the queue and the kernels before it gets 503

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"Limits.{name} must be positive, got {value!r}")
