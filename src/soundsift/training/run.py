"""``train``: one training run, stage 1 or stage 2 (the same code with other configs), in three steps.

``prepare`` reads the data, builds the module and writes the resolved config; ``fit`` runs Lightning
(resuming from ``checkpoints/last.ckpt`` when there is one); ``finalise`` saves the model selected by
validation mAP@10 and evaluates it on the test split. A run directory holds: config.yaml (resolved),
checkpoints/ (Lightning, for resuming), model.pt (the selected model, soundsift format), metrics.json,
history.json (loss terms and validation metrics per epoch), test_queries.json (the test split's rank and
AP@10 per query caption, for ``soundsift compare``), problems.txt (skipped data).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from soundsift.atomic import atomic_write
from soundsift.checkpoints import load_model, read_model_file, save_model
from soundsift.config import Config, build_config, dump_config
from soundsift.data.dataset import AudioStore, PairDataset, collate_pairs
from soundsift.data.records import Problem, SplitData
from soundsift.errors import ConfigError, DatasetError
from soundsift.training.paths import canonical_config
from soundsift.training.sampling import EpochSampler

if TYPE_CHECKING:
    from soundsift.config import DataConfig, ExtraTrain
    from soundsift.correspondences import TeacherEnsemble

log = logging.getLogger(__name__)
MONITOR = "val/mAP@10"


@dataclass
class RunResult:
    out_dir: Path
    model_path: Path
    metrics: dict[str, Any]


@dataclass
class PreparedRun:
    """Everything ``fit`` needs: the resolved config, the module, the data."""

    config: Config
    out_dir: Path
    module: Any  # RetrievalModule
    splits: dict[str, SplitData]
    store: AudioStore
    loader: torch.utils.data.DataLoader
    started: float


def read_splits(data: DataConfig, sample_rate: int, progress: bool) -> tuple[dict[str, SplitData], AudioStore]:
    """The train/val/test splits of the ``data`` section with unreadable audio dropped (and reported).

    ``data.extra_train`` datasets are appended to the training split (clip ids prefixed by dataset).
    """
    from soundsift.data.readers import combine, read_split

    check_data_roots(data)
    store = AudioStore(sample_rate, data.preload)
    splits = {}
    for role, name in (("train", data.train_split), ("val", data.val_split), ("test", data.test_split)):
        if name:
            split = read_split(data.format, data.root, name)
            if role == "train" and data.extra_train:
                extra = [read_split(e.format, e.root, e.split, **_reader_options(e)) for e in data.extra_train]
                split = combine([split, *extra], name="train")
            splits[role] = store.readable(split, progress=progress)
    return splits, store


def _reader_options(extra: ExtraTrain) -> dict[str, Path]:
    """The reader keywords of one ``data.extra_train`` entry (WavCaps' exclusion list)."""
    if extra.exclude_ids is None:
        return {}
    if extra.format != "wavcaps":
        raise ConfigError(f"data.extra_train: exclude_ids applies to wavcaps only, not {extra.format!r}")
    path = Path(extra.exclude_ids)
    return {"exclude_ids_csv": path if path.is_absolute() or extra.root is None else Path(extra.root) / path}


def write_problems(path: Path, splits: dict[str, SplitData], late: set[Problem] = frozenset()) -> int:
    """``problems.txt``: what reading the splits skipped, and clips that failed to decode later (replaced
    in their batches); written only when there is something to list."""
    lines = [f"[{role}] {p}" for role, s in splits.items() for p in s.problems]
    lines += sorted(f"[train] {p}; replaced in its batches" for p in late)
    if lines:
        atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
        log.warning("%d data problems skipped; see %s", len(lines), path)
    return len(lines)


def load_teachers(paths: Sequence[str], split: SplitData, config: Config | None = None,
                  store: AudioStore | None = None, progress: bool = False) -> TeacherEnsemble:
    """Stage 2's targets: the teacher files (checked against ``split``) as the config's ``estimator``
    combines them, or what that estimator computes from the split (training.estimators)."""
    from soundsift.training.estimators import stage2_targets

    if config is None:
        return stage2_targets(paths, split)
    return stage2_targets(paths, split, config.estimator, store, config.trainer.eval_batch_size,
                          config.data.max_seconds, progress)


def read_init(init_from: str) -> dict[str, Any]:
    """``{"config", "state_dict"}`` of the model a run starts from: a model file, a published model by
    name (``init_from=zero-shot`` fine-tunes the offline zero-shot model on your own captions), or any
    other model ``load_model`` reads (a salsa checkpoint such as the joined ``passt_roberta.ckpt``, a
    ``save_pretrained`` folder)."""
    from soundsift.checkpoints.load import PUBLISHED, detect_format

    if str(init_from) in PUBLISHED or detect_format(init_from) in ("salsa", "directory", "clap"):
        model = load_model(str(init_from), device="cpu")
        return {"config": model.config, "state_dict": model.trainable_state_dict()}
    return read_model_file(init_from)


def resolve_model_config(config: Config, init: dict[str, Any] | None = None) -> Config:
    """Stage 2 may leave ``model`` at its defaults: it then takes the stage-1 model's config (``init``:
    what :func:`read_init` returned for ``config.init_from``, read here when not given)."""
    if not config.init_from:
        return config
    init_cfg = (init or read_init(config.init_from))["config"]
    if init_cfg != config.model.to_dict():
        log.info("model config taken from %s (it differs from the config file's)", config.init_from)
    return build_config({**config.to_dict(), "model": init_cfg})


def _quiet_lightning() -> None:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner/tips per run
    # frozen pretrained towers stay in eval mode on purpose (no dropout, fixed statistics)
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")  # Lightning vs newer torch
    warnings.filterwarnings("ignore", message=r".*all_gather is deprecated.*")
    # validation metrics are computed on the whole split by every rank: identical, nothing to reduce
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


#: What a run writes into its folder (``overwrite`` removes exactly these).
RUN_OUTPUTS = ("model.pt", "metrics.json", "problems.txt", "config.yaml", "checkpoints", "logs", "history.json",
               "test_queries.json")


def _main_process() -> bool:
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def check_run_dir(out_dir: Path, overwrite: bool = False, resume: bool = False) -> str:
    """What to do with ``out_dir``: ``"new"``, ``"resume"`` (an interrupted run, or ``resume``) or
    ``"overwrite"``; a finished run (model.pt and metrics.json) is refused unless ``overwrite`` or
    ``resume`` (a kill between the two, during the test evaluation, resumes by itself)."""
    finished = (out_dir / "model.pt").is_file() and (out_dir / "metrics.json").is_file()
    if overwrite:
        if _main_process():
            for name in RUN_OUTPUTS:
                path = out_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return "overwrite"
    if finished and not resume:
        raise ConfigError(
            f"{out_dir} holds a finished run (model.pt): pass --overwrite to train it again from scratch, "
            "--resume to continue it (say with more optim.epochs), or choose another out_dir=PATH"
        )
    return "resume" if (out_dir / "checkpoints" / "last.ckpt").is_file() else "new"


def check_data_roots(data: DataConfig) -> None:
    """Every dataset folder the ``data`` section names exists (checked before any weights are downloaded)."""
    if not data.root:
        raise ConfigError("data.root is not set: point it at the dataset folder (data.root=PATH)")
    for key, root in [("data.root", data.root)] + [("data.extra_train", e.root) for e in data.extra_train]:
        if not root or not Path(root).is_dir():
            raise ConfigError(f"{key}: dataset folder {root} not found")
    if data.relevance:  # read now: a bad file must not end a long run
        from soundsift.data.relevance import read_relevance
        from soundsift.training.multi_eval import relevance_path

        read_relevance(relevance_path(data.relevance, data.root))


def prepare(
    config: Config, progress: bool = True, splits=None, store: AudioStore | None = None,
    overwrite: bool = False, resume: bool = False, data_cache: dict | None = None,
) -> PreparedRun:
    """Check the run folder and the data, resolve and write the config, seed, build the model, read
    the data and the teachers, build the module."""
    import lightning as L

    from soundsift.model import DualEncoder
    from soundsift.training.module import RetrievalModule
    from soundsift.training.objective import Objective

    started = time.time()
    _quiet_lightning()
    out_dir = Path(config.out_dir)
    state = check_run_dir(out_dir, overwrite, resume)
    if splits is None:
        check_data_roots(config.data)
    init = read_init(config.init_from) if config.init_from else None  # read once (a published model loads)
    config = canonical_config(resolve_model_config(config, init))  # config.yaml means the same from any directory
    out_dir.mkdir(parents=True, exist_ok=True)
    dump_config(config, out_dir / "config.yaml")
    L.seed_everything(config.seed, workers=True, verbose=False)

    model = DualEncoder.from_config(config.model.to_dict())
    if splits is None or store is None:
        key = (config.data.model_dump_json(), model.sample_rate)
        if data_cache is not None and key in data_cache:  # runs of one recipe share their data
            splits, store = data_cache[key]
        else:
            splits, store = read_splits(config.data, model.sample_rate, progress)
            if data_cache is not None:
                data_cache[key] = splits, store
    write_problems(out_dir / "problems.txt", splits)
    train_split = splits["train"]
    if not train_split.clips:
        raise DatasetError(f"no readable training clips in {config.data.root}")
    teachers = None
    if config.teachers or config.distills:
        teachers = load_teachers(config.teachers, train_split, config, store, progress)
    module = RetrievalModule(model, config.optim, Objective.from_config(config.loss, teachers))
    if init is not None:
        module.model.load_trainable_state_dict(init["state_dict"], source=str(config.init_from))
    if module.model.text.can_precompute:  # a frozen encoder with a cache (not one with cache=False)
        texts = [t for s in splits.values() for c in s.clips for t in c.captions]
        module.model.text.precompute(texts, progress=progress)

    data, seed, batch_size = config.data, config.seed, config.optim.batch_size
    dataset = PairDataset(train_split, store, data.captions_per_epoch, data.max_seconds, seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        # the order is a function of (seed, epoch) and resumable mid-epoch (training.resume)
        sampler=EpochSampler(len(dataset), batch_size, seed),
        drop_last=len(dataset) > batch_size,
        collate_fn=collate_pairs,
        num_workers=data.num_workers,  # workers are re-created each epoch, so they see set_epoch
        # the loader's own generator (worker seeds): creating an iterator leaves the global RNG alone
        generator=torch.Generator().manual_seed(seed),
        pin_memory=torch.cuda.is_available(),  # faster host-to-GPU copies
    )
    if config.trainer.compile:  # the towers' forward only: parameter names (checkpoints) stay
        for tower in (module.model.audio, module.model.text):
            tower.forward = torch.compile(tower.forward)
    if progress and _main_process():
        what = "resuming from checkpoints/last.ckpt" if state == "resume" else "a new run"
        print(f"soundsift: training into {out_dir} ({what})", file=sys.stderr)
    return PreparedRun(config, out_dir, module, splits, store, loader, started)


def fit(run: PreparedRun, progress: bool = True):
    """Train with Lightning; returns ``(trainer, checkpoint callback, validation callback)``.

    ``checkpoints/last.ckpt`` is written atomically at every epoch end and every
    ``trainer.checkpoint_every_n_steps`` steps; started again, a killed run continues from it exactly
    (data order, crops, RNG states, optimiser and schedule: training.resume).
    """
    import lightning as L

    from soundsift.training.module import ValidationCallback, progress_bar
    from soundsift.training.resume import (
        AtomicCheckpointIO,
        LastCheckpoint,
        ResumeState,
        remove_partial_checkpoints,
    )

    config, out_dir = run.config, run.out_dir
    folder = out_dir / "checkpoints"
    if _main_process():
        remove_partial_checkpoints(folder)  # writes a kill interrupted
    # ResumeState makes the loader resumable; Lightning cannot tell and warns on a mid-epoch resume
    warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")
    validation = ValidationCallback(run.splits["val"], run.store, config.data.max_seconds,
                                    config.trainer.eval_batch_size, out_dir)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=folder, monitor=MONITOR, mode="max", save_top_k=1, save_last=False,
        save_on_train_epoch_end=True, filename="best", enable_version_counter=False,
    )
    tr = config.trainer
    last = folder / "last.ckpt"
    callbacks = [
        validation, ResumeState(run.loader.sampler, run.loader.dataset),
        checkpoint, LastCheckpoint(last, tr.checkpoint_every_n_steps),  # in this order, after validation
    ]
    show_bar = tr.progress_bar and progress
    if show_bar:
        callbacks.append(progress_bar())  # "Epoch 2/2", not Lightning's "Epoch 1/1"
    trainer = L.Trainer(
        max_epochs=config.optim.epochs,
        accelerator=tr.accelerator, devices=list(tr.devices) if isinstance(tr.devices, tuple) else tr.devices,
        num_nodes=tr.num_nodes, strategy=tr.strategy, precision=tr.precision, sync_batchnorm=tr.sync_batchnorm,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # EpochSampler splits the epoch between processes itself
        logger=L.pytorch.loggers.CSVLogger(out_dir, name="logs", version=""),
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        log_every_n_steps=max(1, min(tr.log_every_n_steps, len(run.loader))),
        limit_val_batches=0,
        num_sanity_val_steps=0,
        gradient_clip_val=config.optim.grad_clip,
    )
    trainer.fit(run.module, train_dataloaders=run.loader, ckpt_path=str(last) if last.is_file() else None)
    return trainer, checkpoint, validation


def finalise(run: PreparedRun, checkpoint, validation, progress: bool = True) -> RunResult:
    """Save the model validation selected, evaluate it on the test split, write metrics.json and the
    test split's per-query results (test_queries.json)."""
    from soundsift.metrics import metrics_from_ranks, text_to_audio_ranks_from_embeddings
    from soundsift.training.compare import FILE, per_query_doc, write_per_query
    from soundsift.training.embed import embed_split

    out_dir, module, splits, tr = run.out_dir, run.module, run.splits, run.config.trainer
    if checkpoint.best_model_path:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
        module.model.load_trainable_state_dict({k[len("model."):]: v for k, v in state.items()})
    if module.late_problems:
        write_problems(out_dir / "problems.txt", splits, module.late_problems)
    module.model.tau = run.config.loss.tau  # the model file records the temperature it was trained at
    model_path = save_model(module.model.cpu(), out_dir / "model.pt", meta={"run": run.config.out_dir})
    metrics: dict[str, Any] = {"best_epoch": None, "val": None, "val_history": validation.history}
    if validation.history:
        best = max(validation.history, key=lambda h: h["mAP@10"])
        metrics["best_epoch"], metrics["val"] = best["epoch"], {k: v for k, v in best.items() if k != "epoch"}
    if "test" in splits and splits["test"].clips:
        model = load_model(model_path)  # evaluate exactly what was saved, on the GPU when there is one
        emb = embed_split(model, splits["test"], run.store, run.config.data.max_seconds, tr.eval_batch_size, progress)
        ranks = text_to_audio_ranks_from_embeddings(emb.audio, emb.captions, emb.caption_clip)
        metrics["test"] = metrics_from_ranks(ranks)
        ap16 = None
        if run.config.data.relevance:
            from soundsift.training.multi_eval import multi_relevance_of_split, relevance_path

            path = relevance_path(run.config.data.relevance, run.config.data.root)
            metrics["test_multi"], ap16 = multi_relevance_of_split(path, emb.clip_ids, emb.caption_texts,
                                                                   emb.audio @ emb.captions.T)
        doc = per_query_doc(splits["test"].name, emb.clip_ids, emb.caption_texts, emb.caption_clip, ranks, ap16)
        write_per_query(out_dir / FILE, doc)
    metrics["seconds"] = round(time.time() - run.started, 2)
    text = json.dumps(metrics, indent=2)
    atomic_write(out_dir / "metrics.json", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return RunResult(out_dir, model_path, metrics)


def train(
    config: Config, progress: bool = True, splits=None, store: AudioStore | None = None,
    overwrite: bool = False, resume: bool = False, data_cache: dict | None = None,
) -> RunResult:
    """Run one training job described by ``config``; ``splits``/``store`` let callers share loaded data.

    A folder that holds a finished run is refused unless ``overwrite`` (start again) or ``resume``
    (continue from its last checkpoint); an interrupted run resumes by itself. ``data_cache`` (a dict
    the caller keeps) shares read data between runs with the same data settings.
    """
    run = prepare(config, progress, splits, store, overwrite, resume, data_cache)
    trainer, checkpoint, validation = fit(run, progress)
    if not trainer.is_global_zero:  # with several processes, rank 0 alone writes the results
        return RunResult(run.out_dir, run.out_dir / "model.pt", {})
    return finalise(run, checkpoint, validation, progress)
