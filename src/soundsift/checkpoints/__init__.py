"""Model files: the soundsift format (``format``), ``load_model`` with format detection (``load``), the
Hugging Face layout (``hub``) and the paper authors' salsa checkpoint (``salsa``).

Imported lazily (PEP 562), so that a torch-free submodule (``checkpoints.windows``) does not import torch:
a search or build run by ONNX Runtime never needs it."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "read_model_file": "format", "save_model": "format", "from_pretrained": "hub", "save_pretrained": "hub",
    "detect_format": "load", "load_model": "load", "load_salsa_checkpoint": "salsa",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"soundsift.checkpoints.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'soundsift.checkpoints' has no attribute {name!r}")
