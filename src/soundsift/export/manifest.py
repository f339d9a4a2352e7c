"""The manifest of an exported model folder (``manifest.json``): what the graphs are, what runs beside
them, and which model and soundsift version wrote them. Read without torch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from soundsift.errors import ExportError
from soundsift.version import __version__

FORMAT = "soundsift-onnx"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
OPSET = 17
#: How the graphs are stored (in the cache key of exports made on demand, so a new layout is exported again):
#: 2, each graph's weights beside it in GRAPH.onnx.data (memory-mapped); 1, inside the graph.
LAYOUT = 2

#: The graphs' inputs: name -> (dtype, axes); a named axis is dynamic, an int fixed.
Inputs = dict[str, list[Any]]


@dataclass
class AudioGraphs:
    """The audio tower: ``core`` (pieces, or whole waveforms) and ``head`` graphs, and what runs beside."""

    core: str
    head: str
    split: str
    window: int
    hop: int
    min_remainder: int
    pool: str
    pool_k: int
    takes_valid: bool
    weighted: bool
    sample_rate: int
    batch_invariant: bool
    inputs: dict[str, Inputs]
    #: pieces of their own length (``split="clips"``, or clips shorter than ``window``: MN), padded to ``min_piece``
    short_alone: bool = False
    min_piece: int = 0
    #: waveforms at ``sample_rate`` are resampled to this rate before they are cut (0: not resampled)
    model_rate: int = 0
    #: the tower's ``segment`` (longest input in one piece, samples; 0: none); -1: not recorded (older
    #: exports: the window of a snippet split)
    segment: int = -1


@dataclass
class TextGraph:
    """The text tower's graph, its tokenizer file and the caption normalisation beside it."""

    graph: str
    tokenizer: str
    max_tokens: int
    lowercase: bool
    strip_punctuation: bool
    pad_id: int
    pad_token: str
    inputs: dict[str, Inputs]


@dataclass
class ExportManifest:
    """What ``export_onnx`` wrote; ``identity`` is the source model's (its int8 variant's own)."""

    model_name: str
    identity: str
    source_identity: str
    config: dict[str, Any]
    tau: float
    embed_dim: int
    audio: AudioGraphs
    text: TextGraph
    quantize: str | None = None
    opset: int = OPSET
    soundsift_version: str = __version__
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    meta: dict[str, Any] = field(default_factory=dict)

    def write(self, folder: Path) -> None:
        """Into a folder being filled (``atomic.publish_dir`` publishes it whole)."""
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2, sort_keys=True), encoding="utf-8")


def is_export_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder with an export manifest (cheap: one file read)."""
    file = Path(path).expanduser() / MANIFEST
    if not file.is_file():
        return False
    try:
        return json.loads(file.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_manifest(folder: str | Path) -> ExportManifest:
    """The manifest of an exported folder; ExportError (one line) when it is missing, unreadable, of
    another format version, or written by another soundsift version."""
    file = Path(folder).expanduser() / MANIFEST
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{file}: not a readable export manifest ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError(f"{file}: not a soundsift ONNX export (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{file}: export format version {doc.get('format_version')!r}, this soundsift reads "
                          f"{FORMAT_VERSION}; export the model again")
    if doc.get("soundsift_version") != __version__:
        raise ExportError(f"{file}: exported by soundsift {doc.get('soundsift_version')}, this is {__version__}; "
                          "export the model again (soundsift export onnx)")
    try:
        doc["audio"] = AudioGraphs(**doc["audio"])
        doc["text"] = TextGraph(**doc["text"])
        return ExportManifest(**doc)
    except (KeyError, TypeError) as exc:
        raise ExportError(f"{file}: the export manifest is incomplete or malformed ({exc})") from None
