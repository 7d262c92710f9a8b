"""Imports zennit 1.0.0 where it is installed (benchmarks/anchors/install_zennit.sh), with the torchvision
stand-in on sys.path only if no real torchvision imports. Returns None where zennit is missing."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

STANDIN = Path(__file__).resolve().parent / "torchvision_standin"


def import_zennit() -> ModuleType | None:
    if importlib.util.find_spec("zennit") is None:
        return None
    try:
        importlib.import_module("torchvision")
    except Exception:  # missing, or the registry's torchvision that fails beside this torch
        sys.modules.pop("torchvision", None)
        if str(STANDIN) not in sys.path:
            sys.path.append(str(STANDIN))
    return importlib.import_module("zennit")
