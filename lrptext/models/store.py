"""lrptext's model files: one torch.save'd dict of tensors, strings and numbers, read back with
``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FORMATS = {"text": "lrptext.text-classifier", "image": "lrptext.image-classifier"}
FORMAT = FORMATS["text"]
VERSION = 1
DEFAULTS = {"text": Path(__file__).resolve().parent / "default" / "spam-cnn.pt",
            "image": Path(__file__).resolve().parent / "default" / "fashion-cnn.pt"}
DEFAULT_MODEL = DEFAULTS["text"]


def save(path: str | Path, payload: dict[str, Any], kind: str = "text") -> None:
    torch.save({"format": FORMATS[kind], "version": VERSION, **payload}, Path(path))


def read(path: str | Path, kind: str = "text") -> dict[str, Any]:
    path = DEFAULTS[kind] if str(path) == "default" else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist; pass 'default' for the bundled {kind} model or a "
                                "file written by 'lrptext train'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one holding arbitrary objects
        raise ValueError(f"{path} is not an lrptext model file ({type(error).__name__}); lrptext reads the files "
                         "'lrptext train' writes, and never unpickles arbitrary objects") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMATS[kind]:
        found = payload.get("format") if isinstance(payload, dict) else None
        what = f"an lrptext {found.split('.')[-1]} model, not a {kind} classifier" if found in FORMATS.values() else \
            "a torch file but not an lrptext model file"
        raise ValueError(f"{path} is {what} (no '{FORMATS[kind]}' marker); train one with 'lrptext train'")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} has lrptext model format version {payload.get('version')}; this lrptext reads "
                         f"version {VERSION}")
    return payload


def kind_of(path: str | Path) -> str:
    """"image" for a file of an image classifier, else "text" (whose reader then says what the file is, if it is
    not a text classifier either)."""
    try:
        read(path, "image")
    except ValueError:
        return "text"
    return "image"
