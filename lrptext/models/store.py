"""lrptext's model files: one torch.save'd dict of tensors, strings and numbers, read back with
``torch.load(weights_only=True)``, so loading never unpickles arbitrary objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

FORMAT = "lrptext.text-classifier"
VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parent / "default" / "spam-cnn.pt"


def save(path: str | Path, payload: dict[str, Any]) -> None:
    torch.save({"format": FORMAT, "version": VERSION, **payload}, Path(path))


def read(path: str | Path) -> dict[str, Any]:
    path = DEFAULT_MODEL if str(path) == "default" else Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist; pass 'default' for the bundled SpamAssassin "
                                "model or a file written by 'lrptext train'")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, or one holding arbitrary objects
        raise ValueError(f"{path} is not an lrptext model file ({type(error).__name__}); lrptext reads the files "
                         "'lrptext train' writes, and never unpickles arbitrary objects") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is a torch file but not an lrptext model file (no '{FORMAT}' marker); train one "
                         "with 'lrptext train'")
    if payload.get("version") != VERSION:
        raise ValueError(f"{path} has lrptext model format version {payload.get('version')}; this lrptext reads "
                         f"version {VERSION}")
    return payload
