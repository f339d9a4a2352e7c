"""Correspondence estimators as plug-ins: each turns a training split into stage 2's targets.

An estimator is a function ``EstimatorInput -> TeacherEnsemble``: stage 2 calls ``batch_similarity`` on
what it returns, and ``soundsift teachers --estimator NAME`` stores it as one teacher file
(:func:`as_teacher`; the constructions of :mod:`soundsift.estimators` keep it exact). Built in:

- ``ensemble``: the mean similarity of M teachers' embeddings (the paper; the default);
- ``mix``: a weighted mean of teachers (any estimator's files), ``weights`` given;
- ``caption-similarity`` (Xie et al. 2024): ``C[i, j]`` = mean over clip i's own captions c of the text
  model's ``cos(t_c, t_j)``, with ``text_model`` a text encoder name (``minilm``) or a soundsift model
  (its text tower, in its joint space);
- ``model``: any soundsift model (a file, ``zero-shot``, ``salsa``) embedding the split.

Each is a record of :mod:`soundsift.config.estimators` (what it reads); ``register_estimator(name, fn,
reads_teachers)`` adds one (and lets configs name it).
:func:`measure_correspondences` scores an estimate against the generated benchmark's ground truth:
ROC AUC over all pairs, and the probability mass the column softmax (stage 2's ``p_hat_a``) puts on
truly relevant clips in random training batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from soundsift.config import EstimatorConfig, EstimatorRecord, estimator_record
from soundsift.config import register_estimator as register_record
from soundsift.correspondences import TeacherEmbeddings, TeacherEnsemble, correspondence_auc
from soundsift.data.dataset import AudioStore, flatten_captions
from soundsift.data.records import SplitData
from soundsift.errors import ConfigError
from soundsift.estimators import caption_mean_embeddings, column_softmax_mass, combine_embeddings
from soundsift.training.paths import canonical, canonical_ref


@dataclass
class EstimatorInput:
    """What an estimator may use: the (readable) training split, its audio, teacher files aligned with
    it, and the estimator's options."""

    split: SplitData
    teachers: list[TeacherEmbeddings] = field(default_factory=list)
    store: AudioStore | None = None
    weights: list[float] | None = None
    text_model: str = "minilm"
    model: str | None = None
    max_seconds: float | None = None
    batch_size: int = 32
    progress: bool = False
    device: str | None = None


def register_estimator(name: str, target: Callable[[EstimatorInput], TeacherEnsemble] | str,
                       reads_teachers: bool, **reads: bool) -> EstimatorRecord:
    """Add an estimator; ``reads_teachers``: it combines the ``teachers`` files (else it computes its
    targets from the split, and a config naming it must leave ``teachers`` empty); ``reads``: the other
    fields of :class:`~soundsift.config.EstimatorRecord` (``reads_models``, ``reads_text_model``...)."""
    return register_record(EstimatorRecord(name, target, reads_teachers, **reads))


def _device(device: str | None) -> str:
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def ensemble(inp: EstimatorInput) -> TeacherEnsemble:
    if not inp.teachers:
        raise ConfigError("estimator ensemble needs at least one teacher (a teacher file or a model)")
    if inp.weights is not None:
        raise ConfigError("estimator ensemble takes no weights (a weighted mean is estimator mix)")
    return TeacherEnsemble(inp.teachers)


def mix(inp: EstimatorInput) -> TeacherEnsemble:
    if not inp.teachers or inp.weights is None or len(inp.weights) != len(inp.teachers):
        raise ConfigError(f"estimator mix needs one weight per teacher: {len(inp.teachers)} teachers, weights "
                          f"{inp.weights!r}")
    return TeacherEnsemble(inp.teachers, inp.weights)


def embed_captions(text_model: str, texts: Sequence[str], batch_size: int = 256,
                   device: str | None = None) -> torch.Tensor:
    """``(len(texts), D)`` float32 caption embeddings: a text encoder by name (``minilm``: the sentence
    model itself) or a soundsift model's text tower (a model file or a published name)."""
    from soundsift.encoders import build_text_encoder, text_encoder_names

    if text_model in text_encoder_names():
        encoder = build_text_encoder(text_model).to(_device(device)).eval()
        with torch.no_grad():
            parts = [encoder(list(texts[i:i + batch_size])).float().cpu() for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, int(encoder.out_dim))
    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.load import PUBLISHED

    if text_model not in PUBLISHED and not Path(text_model).exists():
        raise ConfigError(f"text model {text_model!r}: not a text encoder ({', '.join(text_encoder_names())}), "
                          f"a published model ({', '.join(PUBLISHED)}) or a model file")
    model = load_model(text_model, device=_device(device))
    with torch.no_grad():
        return torch.from_numpy(model.embed_texts(list(texts), batch_size))


def caption_similarity(inp: EstimatorInput) -> TeacherEnsemble:
    texts, clip_of = flatten_captions(inp.split)
    clip_of_t = torch.tensor(clip_of, dtype=torch.long)
    embs = embed_captions(inp.text_model, texts, device=inp.device)
    clip_rows, caption_rows = caption_mean_embeddings(embs, clip_of_t, len(inp.split.clips))
    teacher = TeacherEmbeddings([c.clip_id for c in inp.split.clips], clip_rows, texts, clip_of_t, caption_rows,
                                meta={"estimator": "caption-similarity", "text_model": inp.text_model,
                                      "model_identity": f"caption-similarity:{inp.text_model}"})
    return TeacherEnsemble([teacher])


def model_teacher(inp: EstimatorInput) -> TeacherEnsemble:
    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.load import PUBLISHED
    from soundsift.training.embed import embed_split

    if not inp.model:
        raise ConfigError("estimator model needs a model (a model file or a published name such as zero-shot)")
    model = load_model(inp.model, device=_device(inp.device))
    store = inp.store
    if store is None or store.sample_rate != model.sample_rate:
        store = AudioStore(model.sample_rate, preload=False)
    emb = embed_split(model, inp.split, store, inp.max_seconds, inp.batch_size, inp.progress)
    teacher = TeacherEmbeddings(emb.clip_ids, emb.audio, emb.caption_texts, emb.caption_clip, emb.captions,
                                meta={"estimator": "model", "model_identity": model.identity,
                                      "model_path": canonical_ref(inp.model, PUBLISHED)})
    return TeacherEnsemble([teacher])


def estimate(name: str, inp: EstimatorInput) -> TeacherEnsemble:
    """Run the estimator ``name`` (UnknownNameError, one line, lists the known ones)."""
    return estimator_record(name).load()(inp)


def as_teacher(targets: TeacherEnsemble, meta: dict[str, Any] | None = None) -> TeacherEmbeddings:
    """The estimate as one teacher whose similarity is ``targets``' C_hat (a single unweighted
    teacher is returned as it is; several are combined exactly, :func:`combine_embeddings`)."""
    if len(targets) == 1:
        teacher = targets.teachers[0]
        if meta:
            teacher.meta.update(meta)
        return teacher
    audio, captions = combine_embeddings([t.audio for t in targets.teachers],
                                         [t.captions for t in targets.teachers], targets.weights)
    first = targets.teachers[0]
    parts = [t.meta.get("model_identity") or t.source or f"teacher {m}" for m, t in enumerate(targets.teachers)]
    return TeacherEmbeddings(first.clip_ids, audio, first.caption_texts, first.caption_clip, captions,
                             meta={"model_identity": "mix:" + ",".join(str(p) for p in parts),
                                   "components": [canonical(t.source) if t.source else t.meta.get("model_path")
                                                  for t in targets.teachers],
                                   "weights": targets.weights, **(meta or {})})


def stage2_targets(paths: Sequence[str], split: SplitData, estimator: EstimatorConfig | None = None,
                   store: AudioStore | None = None, batch_size: int = 32, max_seconds: float | None = None,
                   progress: bool = False) -> TeacherEnsemble:
    """Stage 2's targets as the config's ``estimator`` section names them: the teacher files ``paths``
    (checked against ``split``) combined, or computed from ``split`` itself."""
    estimator = estimator or EstimatorConfig()
    texts, _ = flatten_captions(split)
    teachers = [TeacherEmbeddings.load(p) for p in paths]
    for t in teachers:
        t.check_alignment([c.clip_id for c in split.clips], texts)
    weights = None if estimator.weights is None else list(estimator.weights)
    inp = EstimatorInput(split, teachers, store, weights, estimator.text_model or "minilm", estimator.model,
                         max_seconds, batch_size, progress)
    return estimate(estimator.name, inp)


@dataclass(frozen=True)
class EstimateOptions:
    """What ``soundsift teachers`` estimates and where it writes it. ``models`` are embedded (each a
    teacher of an estimator that reads teachers; the model of one that is a model), ``teachers`` are
    teacher files, ``weights`` one per teacher (mix), ``text_model`` caption-similarity's."""

    data_root: str | Path
    out: str | Path
    data_format: str = "clotho"
    split: str = "development"
    models: Sequence[str] = ()
    teachers: Sequence[str | Path] = ()
    weights: Sequence[float] | None = None
    text_model: str = "minilm"
    max_seconds: float | None = None
    batch_size: int = 32
    half: bool = False
    progress: bool = True


def _check_inputs(record: EstimatorRecord, models: Sequence[str], teachers: Sequence[str | Path]) -> None:
    """Refuse inputs the estimator does not read (or lacks), naming the options."""
    name = record.name
    if record.one_model and (len(models) != 1 or teachers):
        raise ConfigError(f"--estimator {name} uses exactly one --model and no --teachers, got {len(models)} "
                          f"models and {len(teachers)} teacher files")
    if record.reads_teachers and not (models or teachers):
        raise ConfigError(f"--estimator {name} combines teachers: give --teachers FILE ... and/or --model M")
    if (models and not record.reads_models) or (teachers and not record.reads_teachers):
        takes = "--text-model" if record.reads_text_model else "its own options"
        raise ConfigError(f"--estimator {name} takes {takes}, not --model or --teachers")


def write_estimate(estimator: str, options: EstimateOptions) -> Path:
    """``soundsift teachers --estimator NAME``: estimate the correspondences of ``options.split`` and
    save them as one teacher file at ``options.out``. One model alone (an unweighted estimator that
    reads models) writes exactly what ``soundsift teachers --model M`` always wrote, with its torchrun
    support."""
    from soundsift.training.embed import read_readable_split
    from soundsift.training.teachers import make_teacher

    o = options
    record = estimator_record(estimator)  # an unknown name fails before any data is read
    models, teachers = list(o.models), list(o.teachers)
    _check_inputs(record, models, teachers)
    if record.reads_models and not record.weighted and len(models) == 1 and not teachers and o.weights is None:
        return make_teacher(models[0], o.data_root, o.out, o.data_format, o.split, o.max_seconds, o.batch_size,
                            o.half, progress=o.progress)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--estimator {estimator} runs in one process (torchrun serves one --model alone)")
    data, store = read_readable_split(o.data_format, o.data_root, o.split, 16000, preload=False, progress=o.progress)
    texts, _ = flatten_captions(data)
    loaded = [TeacherEmbeddings.load(p) for p in teachers]
    for t in loaded:
        t.check_alignment([c.clip_id for c in data.clips], texts)
    inp = EstimatorInput(data, loaded, store, None if o.weights is None else list(o.weights), o.text_model,
                         models[0] if record.one_model else None, o.max_seconds, o.batch_size, o.progress)
    if record.reads_teachers:  # each model given is one more teacher, embedded here
        for m in models:
            inp.model = m
            inp.teachers.append(model_teacher(inp).teachers[0])
        inp.model = None
    targets = record.load()(inp)
    meta = {"estimator": estimator, "data_format": o.data_format, "data_root": canonical(o.data_root), "split": o.split}
    if record.reads_text_model:
        meta["text_model"] = o.text_model
    return as_teacher(targets, meta).save(o.out, dtype=torch.float16 if o.half else None)


# ------------------------------------------------------------------------------- measurement
def ground_truth_relevance(data_root: str | Path, split: str, clip_ids: Sequence[str],
                           caption_texts: Sequence[str], caption_clip: torch.Tensor) -> torch.Tensor | None:
    """The generated benchmark's truth as a bool ``(n_clips, n_captions)`` matrix in a teacher's order
    (``caption_clip[j]``: caption j's clip), or None when ``data_root`` holds no ground truth or the
    teacher's clips and captions are not the benchmark's."""
    from soundsift.data.synth.benchmark import load_ground_truth

    try:
        truth = load_ground_truth(data_root, split)
    except FileNotFoundError:
        return None
    row = {str(f): i for i, f in enumerate(truth["file_names"])}
    holds = torch.from_numpy(truth["holds"])  # (n_captions, n_clips), caption k of clip r at per_clip * r + k
    per_clip = holds.shape[0] // max(1, len(row))
    if any(c not in row for c in clip_ids):
        return None
    seen: dict[int, int] = {}
    caption_rows = []
    for clip in caption_clip.tolist():
        k = seen[clip] = seen.get(clip, -1) + 1
        caption_rows.append(per_clip * row[clip_ids[clip]] + k)
    gt_captions = truth["captions"]
    if any(k >= per_clip for k in seen.values()) or any(str(gt_captions[r]) != t for r, t in zip(caption_rows, caption_texts)):
        return None
    clips = torch.tensor([row[c] for c in clip_ids], dtype=torch.long)
    return holds[torch.tensor(caption_rows, dtype=torch.long)][:, clips].T.contiguous()


def _batches(caption_clip: torch.Tensor, n_clips: int, batch_size: int, rounds: int, seed: int):
    """Batches as stage 2 sees them with one caption per clip: ``rounds`` epochs of shuffled clips in
    groups of ``batch_size`` (the last, smaller group dropped), each clip with one random own caption."""
    order = torch.argsort(caption_clip, stable=True)
    counts = torch.bincount(caption_clip, minlength=n_clips)
    starts = torch.cumsum(counts, 0) - counts
    has = (counts > 0).nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    size = min(batch_size, len(has))
    for _ in range(rounds):
        perm = has[torch.randperm(len(has), generator=g)]
        for b in range(0, len(perm) - size + 1, size):
            clips = perm[b:b + size]
            pick = (torch.rand(size, generator=g) * counts[clips]).long()
            yield clips, order[starts[clips] + pick]


def measure_correspondences(targets: TeacherEnsemble, relevant: torch.Tensor, batch_size: int = 64,
                            tau: float = 0.05, rounds: int = 10, seed: int = 0) -> dict[str, float]:
    """How well ``targets`` estimate the truth ``relevant`` (bool ``(n_clips, n_captions)``):

    - ``auc``: ROC AUC of C_hat over all pairs of the split;
    - ``softmax_mass``: in random batches of ``batch_size`` (clip, own caption) pairs, the probability
      the column softmax of C_hat at ``tau`` puts on clips the caption truly describes, averaged over
      columns and batches (``chance_mass``: a uniform softmax; 1 is the ideal);
    - ``other_mass``: the part of it on relevant clips other than the caption's own, averaged over the
      columns that have such a clip in their batch (the one-hot labels of stage 1 give 0 there).
    """
    n_clips = len(targets.clip_ids)
    if relevant.shape != (n_clips, len(targets.caption_texts)):
        raise ValueError(f"relevant is {tuple(relevant.shape)}, the estimate {(n_clips, len(targets.caption_texts))}")
    auc = correspondence_auc(targets.full_similarity(), relevant)
    mass, other, chance, n_other = [], [], [], 0
    caption_clip = targets.caption_clip.long()
    for clips, caps in _batches(caption_clip, n_clips, batch_size, rounds, seed):
        sim = targets.batch_similarity(clips, caps).float()
        rel = relevant[clips][:, caps]
        mass.append(column_softmax_mass(sim, rel, tau))
        chance.append(rel.float().mean(0))
        others = rel & ~torch.eye(len(clips), dtype=torch.bool)
        cols = others.any(0)
        if bool(cols.any()):
            other.append(column_softmax_mass(sim, others, tau)[cols])
            n_other += int(cols.sum())
    if not mass:
        raise ValueError("no batch to measure: the split has no clip with a caption")
    out = {"auc": auc, "softmax_mass": float(torch.cat(mass).mean()), "chance_mass": float(torch.cat(chance).mean()),
           "other_mass": float(torch.cat(other).mean()) if other else float("nan"),
           "batch_size": min(batch_size, n_clips), "tau": tau, "batches": len(mass)}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def measure_teacher_file(path: str | Path, data_root: str | Path, split: str = "development",
                         **options: Any) -> dict[str, float] | None:
    """:func:`measure_correspondences` of a teacher file against ``data_root``'s ground truth (None when
    there is none, e.g. a real dataset)."""
    teacher = TeacherEmbeddings.load(path)
    relevant = ground_truth_relevance(data_root, split, list(teacher.clip_ids), list(teacher.caption_texts),
                                      teacher.caption_clip)
    if relevant is None:
        return None
    return measure_correspondences(TeacherEnsemble([teacher]), relevant, **options)
