"""Loading a model for the runtime a command asks for (``--runtime torch|onnx``), importing torch only
when it is needed.

``--runtime onnx`` takes an exported folder as it is; a published name or a model file is exported once
into the cache (``$SOUNDSIFT_CACHE`` or ``~/.cache/soundsift``, folder ``onnx/``, keyed by the model file's
path, size and modification time, the soundsift version and the export's ``LAYOUT``) and loaded from there afterwards without
torch. An exported folder given with ``--runtime torch`` (the default) is run by ONNX Runtime anyway.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from soundsift.errors import ConfigError, ExportError
from soundsift.export.manifest import LAYOUT, is_export_folder
from soundsift.version import __version__

RUNTIMES = ("torch", "onnx")


def cache_root() -> Path:
    """Where exports made on demand live: ``$SOUNDSIFT_CACHE/onnx`` or ``~/.cache/soundsift/onnx``."""
    env = os.environ.get("SOUNDSIFT_CACHE")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "soundsift") / "onnx"


def _cache_key(ref: str, quantize: str | None) -> str:
    path = Path(ref).expanduser()
    if path.exists():
        stat = path.stat()
        ref = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    digest = hashlib.sha256(f"{ref}|{__version__}|{quantize}|layout {LAYOUT}".encode()).hexdigest()[:20]
    return f"{Path(str(ref).split('|')[0]).name or 'model'}-{digest}"


def onnx_model(ref: str | Path, quantize: str | None = None) -> Any:
    """The ONNX Runtime model of ``ref``: an exported folder, or a model exported once into the cache."""
    from soundsift.export.runtime import OnnxModel, onnxruntime

    onnxruntime()  # one line saying how to install it, before anything is exported
    if is_export_folder(ref):
        model = OnnxModel(ref)
        if quantize and model.quantize != quantize:
            raise ExportError(f"{ref}: exported with quantize={model.quantize}, not {quantize}; export it again "
                              f"with --quantize {quantize}")
        return model
    cached = cache_root() / _cache_key(str(ref), quantize)
    if not is_export_folder(cached):
        from soundsift.checkpoints import load_model
        from soundsift.export.onnx import export_onnx

        try:
            export_onnx(load_model(str(ref), device="cpu"), cached, name=str(ref), quantize=quantize)
        except (ExportError, OSError):
            if not is_export_folder(cached):  # not another process's export finished meanwhile
                raise
    return OnnxModel(cached)


def wants_onnx(ref: Any, runtime: str) -> bool:
    """Whether ``ref`` (a reference or list of them) is to run under ONNX Runtime."""
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if not all(isinstance(r, (str, Path)) for r in refs):
        return False  # a loaded model runs as it is
    return runtime == "onnx" or (len(refs) == 1 and is_export_folder(refs[0]))


def load_for_runtime(ref: str | Path | Sequence[str | Path], runtime: str = "torch",
                     quantize: str | None = None, device: str | None = None) -> Any:
    """A model (``load_model``'s references: a file, a folder, a published name, a list) for ``runtime``."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if wants_onnx(refs, runtime):
        if len(refs) != 1:
            raise ConfigError("--runtime onnx runs one model; an ensemble runs with --runtime torch")
        return onnx_model(refs[0], quantize)
    if quantize:
        raise ConfigError("--quantize needs --runtime onnx")
    from soundsift.checkpoints import load_model

    return load_model(refs if len(refs) > 1 else refs[0], device=device)


def load_index_model(ref: Any, manifest: dict[str, Any], runtime: str | None = None, device: str | None = None) -> Any:
    """The model ``ref`` for searching an index: run by ``runtime``, by default the runtime (and int8
    setting) the index was built with, recorded in its ``manifest``."""
    model = manifest.get("model") or {}
    built_with = str(model.get("runtime") or "torch")  # indexes older than runtimes: torch
    runtime = runtime or built_with
    quantize = model.get("quantize") if runtime == "onnx" and built_with == "onnx" else None
    return load_for_runtime(ref, runtime, quantize, device)
