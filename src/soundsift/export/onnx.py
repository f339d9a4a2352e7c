"""``export_onnx``: write a model's audio and text towers as ONNX graphs plus a manifest, checked against
torch before the folder is published.

The folder holds ``audio_core.onnx`` (front end + network on pieces of audio, or on whole waveforms),
``audio_head.onnx`` (pooled vector -> unit embedding: the tower's own head, the projection, the L2
norm), ``text.onnx`` (token ids -> unit embedding), ``tokenizer.json`` and ``manifest.json``
(``export.manifest``). Each graph's weights lie beside it in ``GRAPH.onnx.data`` (ONNX external data),
which ONNX Runtime memory-maps instead of parsing and copying them: opening MiniLM's text graph takes
about a third of the time (what a ``soundsift search`` waits for; docs/onnx.md). Batch and length axes are dynamic. Before publishing, the export is run by ONNX
Runtime on waveforms of several lengths (several snippets or patches included) and on captions, and
refused when it differs from torch by more than ``TOLERANCE``: a tower whose graph depends on its input
length cannot pass, and says so in one line. ``quantize="int8"``: ONNX Runtime's dynamic quantization
of the weights (activations quantized on the fly), applied after the float check.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from soundsift.encoders.export_plan import AudioExportPlan, TextExportPlan
from soundsift.errors import ExportError
from soundsift.export.manifest import OPSET, AudioGraphs, ExportManifest, TextGraph
from soundsift.export.runtime import OnnxModel, graph_inputs, onnxruntime

#: Largest absolute difference allowed between the float export and torch, per embedding component.
TOLERANCE = 1e-4
QUANTIZE = ("int8",)
GRAPHS = ("audio_core.onnx", "audio_head.onnx", "text.onnx")
#: Tensors from this many bytes go to the graph's ``.data`` file (small ones stay inline in the graph).
EXTERNAL_BYTES = 1024
PROBE_CAPTIONS = ["a dog barks twice in the rain", "Birds!", "an engine idles, then revs up loudly near a busy road"]


class _Head(nn.Module):
    """Pooled (B, F) -> the tower's head, its projection and the L2 norm: (B, D) unit vectors."""

    def __init__(self, head: nn.Module | None, projection: nn.Module) -> None:
        super().__init__()
        self.head, self.projection = head, projection

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        x = self.head(pooled) if self.head is not None else pooled
        return F.normalize(self.projection(x), dim=-1)


class _Text(nn.Module):
    def __init__(self, core: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        self.core, self.projection = core, projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.core(input_ids, attention_mask)), dim=-1)


@dataclass
class ExportReport:
    """What ``export_onnx`` wrote and how far it is from torch."""

    folder: Path
    audio_max_diff: float
    text_max_diff: float
    quantize: str | None
    files: dict[str, int]


def _export(module: nn.Module, args: tuple, file: Path, names: list[str], outputs: list[str],
            axes: dict[str, dict[int, str]]) -> None:
    module.eval()  # the exporter restores the module's mode on everything it holds afterwards
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(file), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)


def _audio_graphs(model: Any, plan: AudioExportPlan, folder: Path) -> AudioGraphs:
    rate = int(model.sample_rate)
    if plan.split == "whole":
        example = (torch.randn(2, rate) * 0.1, torch.tensor([rate, rate // 2]))
        names, axes = ["waveform", "lengths"], {"waveform": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}}
    else:
        size = plan.window or rate  # split="clips" and short_alone: the core takes any length
        example = (torch.randn(2, size) * 0.1,)
        own = plan.split == "clips" or plan.short_alone
        names, axes = ["pieces"], {"pieces": {0: "pieces", 1: "samples"} if own else {0: "pieces"}}
        if plan.takes_valid:
            example += (torch.tensor([size, size // 2]),)
            names.append("valid")
            axes["valid"] = {0: "pieces"}
    outputs = ["features", "weights"] if plan.weighted else ["features"]
    for out in outputs:
        axes[out] = {0: "pieces" if plan.split != "whole" else "batch"}
    _export(plan.core, example, folder / "audio_core.onnx", names, outputs, axes)
    with torch.no_grad():
        features = plan.core(*example)
    features = features[0] if plan.weighted else features
    _export(_Head(plan.head, model.audio_proj), (features.detach(),), folder / "audio_head.onnx", ["pooled"],
            ["embedding"], {"pooled": {0: "batch"}, "embedding": {0: "batch"}})
    ort = onnxruntime()
    inputs = {part: graph_inputs(ort.InferenceSession(str(folder / f"audio_{part}.onnx"), providers=["CPUExecutionProvider"]))
              for part in ("core", "head")}
    return AudioGraphs(core="audio_core.onnx", head="audio_head.onnx", split=plan.split, window=plan.window,
                       hop=plan.hop, min_remainder=plan.min_remainder, pool=plan.pool, pool_k=plan.pool_k,
                       takes_valid=plan.takes_valid, weighted=plan.weighted, sample_rate=rate,
                       batch_invariant=bool(model.audio.batch_invariant), inputs=inputs,
                       short_alone=bool(plan.short_alone), min_piece=int(plan.min_piece), model_rate=plan.model_rate,
                       segment=int(getattr(model.audio, "segment", None) or 0))


def _text_graph(model: Any, plan: TextExportPlan, folder: Path) -> TextGraph:
    backend = getattr(plan.tokenizer, "backend_tokenizer", None)  # transformers' fast tokenizers only
    if backend is None:
        raise ExportError(f"the {type(model.text).__name__} text encoder cannot export to ONNX: its tokenizer "
                          "is not a fast (tokenizers) one")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_truncation()
    tokenizer.no_padding()
    tokenizer.save(str(folder / "tokenizer.json"))
    tok = plan.tokenizer(PROBE_CAPTIONS[:2], padding=True, truncation=True, max_length=plan.max_tokens,
                         return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    _export(_Text(plan.core, model.text_proj), (tok["input_ids"], tok["attention_mask"]), folder / "text.onnx",
            ["input_ids", "attention_mask"], ["embedding"], axes)
    session = onnxruntime().InferenceSession(str(folder / "text.onnx"), providers=["CPUExecutionProvider"])
    return TextGraph(graph="text.onnx", tokenizer="tokenizer.json", max_tokens=int(plan.max_tokens),
                     lowercase=bool(plan.lowercase), strip_punctuation=bool(plan.strip_punctuation),
                     pad_id=int(plan.tokenizer.pad_token_id or 0), pad_token=str(plan.tokenizer.pad_token or "[PAD]"),
                     inputs={"graph": graph_inputs(session)})


def probe_waveforms(model: Any, plan: AudioExportPlan, seed: int = 0) -> list[np.ndarray]:
    """Waveforms of several lengths for checking an export: under one piece, one and a half, and
    (for snippet and patch plans) several pieces with a partial last one; under ``min_piece`` if set."""
    rate = int(model.sample_rate)
    span = plan.window or rate
    lengths = sorted({int(0.4 * rate), int(1.7 * rate), int(0.6 * span), int(2.5 * span) + 123, int(span) + 7,
                      *([plan.min_piece // 2] if plan.min_piece else [])})
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max()) if a.size else 0.0


def _family(tower: Any) -> str:
    return tower.family or type(tower).__name__


def _check(model: Any, folder: Path, plan: AudioExportPlan) -> tuple[float, float]:
    exported = OnnxModel(folder)
    waves = probe_waveforms(model, plan)
    audio = _max_diff(model.embed_waveforms(waves, batch_size=4), exported.embed_waveforms(waves, batch_size=4))
    if not audio <= TOLERANCE:
        name = _family(model.audio)
        raise ExportError(f"the {name!r} audio encoder cannot export to ONNX: its graph differs from torch by "
                          f"{audio:.2g} (> {TOLERANCE:g}) on waveforms of other lengths than traced")
    text = _max_diff(model.embed_texts(PROBE_CAPTIONS), exported.embed_texts(PROBE_CAPTIONS))
    if not text <= TOLERANCE:
        name = _family(model.text)
        raise ExportError(f"the {name!r} text encoder cannot export to ONNX: its graph differs from torch by "
                          f"{text:.2g} (> {TOLERANCE:g})")
    return audio, text


def weights_beside(folder: Path) -> None:
    """Move each graph's weights into ``GRAPH.onnx.data`` beside it (ONNX external data, memory-mapped by
    ONNX Runtime); the graphs compute exactly what they did."""
    import onnx

    for name in GRAPHS:
        graph, data = folder / name, folder / f"{name}.data"
        model = onnx.load(str(graph))  # reads weights already outside too: the model is whole in memory
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        onnx.save_model(model, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=EXTERNAL_BYTES)


def quantize_folder(folder: Path) -> None:
    """Dynamic int8 quantization of the graphs' weights (MatMul, Gemm, Conv), in place."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise ExportError(f"--quantize int8 needs onnxruntime's quantization tools (and onnx): {exc}") from None
    for name in GRAPHS:
        src = folder / name
        tmp = folder / f".{name}.int8"
        import logging

        logging.disable(logging.WARNING)  # its advice on pre-processing, and tensors it leaves in float
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        tmp.replace(src)


def int8_identity(identity: str) -> str:
    """The identity of a model's int8 export: its embeddings differ from the float model's."""
    return hashlib.sha256(f"{identity} onnx int8".encode()).hexdigest()


def export_onnx(model: Any, out: str | Path, *, name: str = "", quantize: str | None = None) -> ExportReport:
    """Export ``model`` (a ``DualEncoder`` with an identity) to the folder ``out`` (new, or empty), checked
    against torch (``TOLERANCE``); ``quantize``: None or ``"int8"``. ExportError names a tower that
    cannot export."""
    from soundsift.atomic import publish_dir

    if quantize not in (None, *QUANTIZE):
        raise ExportError(f"--quantize {quantize!r}: choose {', '.join(QUANTIZE)} (or leave it out)")
    if not hasattr(model, "audio_proj"):
        raise ExportError(f"{type(model).__name__}: only a single model (DualEncoder) exports to ONNX; export "
                          "each model of an ensemble on its own")
    if not model.identity:
        raise ExportError("the model has no identity (sha256 of its file): load it with soundsift.load_model")
    out = Path(out).expanduser()
    if out.exists():
        if not out.is_dir() or any(out.iterdir()):
            raise ExportError(f"{out}: already exists and is not an empty folder; choose a new one")
        out.rmdir()
    model = model.cpu().eval()
    plans = []
    for tower, kind in ((model.audio, "audio"), (model.text, "text")):
        try:
            plans.append(tower.export_plan())
        except ExportError as exc:
            raise ExportError(f"the {_family(tower)!r} {kind} encoder cannot export to ONNX yet: {exc}") from None
    audio_plan, text_plan = plans
    result: dict[str, float] = {}

    def fill(tmp: Path) -> None:
        audio = _audio_graphs(model, audio_plan, tmp)
        text = _text_graph(model, text_plan, tmp)
        manifest = ExportManifest(model_name=str(name or model.meta.get("published") or ""), identity=model.identity,
                                  source_identity=model.identity, config=model.config, tau=float(model.tau),
                                  embed_dim=int(model.embed_dim), audio=audio, text=text,
                                  meta={k: v for k, v in model.meta.items() if isinstance(v, (str, int, float))})
        manifest.write(tmp)
        weights_beside(tmp)
        result["audio"], result["text"] = _check(model, tmp, audio_plan)
        if quantize:
            quantize_folder(tmp)
            weights_beside(tmp)
            manifest.quantize, manifest.identity = quantize, int8_identity(model.identity)
            manifest.write(tmp)

    try:
        publish_dir(out, fill)
    except ExportError:
        raise
    except Exception as exc:  # a torch exporter failure (publish_dir removed the partial folder): one line
        raise ExportError(f"the model ({_family(model.audio)} + "
                          f"{_family(model.text)}) cannot export to ONNX: "
                          f"{str(exc).splitlines()[0][:200]}") from exc
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ExportReport(out, result["audio"], result["text"], quantize, files)
