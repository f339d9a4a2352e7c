"""``train-moments`` and ``evaluate --task moments --baseline learned``: the learned moment model
(``moment_model``) trained on a moment benchmark's training split over a frozen soundsift model's window
embeddings (cached by ``moment_features``), and its predictions on a split written and scored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soundsift.atomic import atomic_write
from soundsift.names import TEST_SPLIT, TRAIN_SPLIT

if TYPE_CHECKING:
    from soundsift.training.moment_options import MomentTrainOptions

LEARNED_WINDOW = 2.0  # seconds: finer than the sliding window's, so the head can place boundaries
LEARNED_HOP = 1.0
MOMENT_MODEL_FILE = "moment_model.pt"


def moment_split_features(model_name: str, data_root: str | Path, split: str, window: float, hop: float, batch_size: int,
              skip_invalid: bool = False):
    """(split, its recordings, their features): annotations read strictly unless ``skip_invalid``."""
    from soundsift.checkpoints import load_model
    from soundsift.checkpoints.windows import build_windows
    from soundsift.data.readers.moment_layout import load_moment_split
    from soundsift.training.moment_features import split_features

    data, recordings = load_moment_split(data_root, split, skip_invalid)
    loaded: list[Any] = []

    def load() -> Any:
        if not loaded:
            loaded.append(load_model(model_name))
            build_windows(loaded[0], window, hop)  # the window must fit the model's input
        return loaded[0]

    return data.split, recordings, split_features(load, model_name, recordings, data, window, hop, batch_size)


def learned_predictions(moment_model: str | Path, data_root: str | Path, split: str, model_name: str | None = None,
                        batch_size: int = 32, skip_invalid: bool = False) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(split, predictions in the task's format, what was used) of a saved moment model on ``split``."""
    from soundsift.training.moment_model import load_moment_model, predict_windows

    saved = load_moment_model(moment_model)
    name = model_name or saved.model
    split, recordings, features = moment_split_features(name, data_root, split, saved.window, saved.hop, batch_size, skip_invalid)
    windows = predict_windows(saved.head, features, [r.duration for r in recordings], saved.hop)
    queries = [(rec.vid, q) for rec in recordings for q in rec.queries]
    predictions = [{"qid": q.qid, "query": q.query, "vid": vid, "pred_relevant_windows": w}
                   for (vid, q), w in zip(queries, windows)]
    return split, predictions, {"model": name, "moment_model": str(moment_model), "window": saved.window,
                                "hop": saved.hop}


def train_moments(model_name: str, data_root: str | Path, out: str | Path, window: float = LEARNED_WINDOW,
                  hop: float = LEARNED_HOP, options: MomentTrainOptions | None = None,
                  batch_size: int = 32, eval_split: str | None = TEST_SPLIT,
                  teachers: Sequence[str] = (), skip_invalid: bool = False) -> dict[str, Any]:
    """Train the moment model on the training split, save it as ``out/moment_model.pt``, and (unless
    ``eval_split`` is None) write and score its predictions on ``eval_split``; ``out/result.json`` holds
    the settings, the losses' first and last values and the metrics. With ``options.distill_weight`` > 0
    the soft targets come from the ``teachers`` (soundsift models, their window embeddings of the same
    windows), or from ``model_name`` itself (self-distillation) when none are given. A bad training
    annotation is skipped and reported; ``eval_split``'s are refused unless ``skip_invalid``."""
    from soundsift.metrics.moments import moment_retrieval_metrics
    from soundsift.training.moment_baseline import write_predictions
    from soundsift.training.moment_model import save_moment_model, train_moment_model
    from soundsift.training.moment_options import MomentTrainOptions

    options = options or MomentTrainOptions()

    out = Path(out)
    _, recordings, features = moment_split_features(model_name, data_root, TRAIN_SPLIT, window, hop, batch_size, True)
    truth = [q.windows for rec in recordings for q in rec.queries]
    log: list[float] = []
    teacher_features = [moment_split_features(t, data_root, TRAIN_SPLIT, window, hop, batch_size, True)[2]
                        for t in teachers] if options.distill_weight > 0 else []
    head = train_moment_model(features, truth, options, log=log, teachers=teacher_features)
    path = save_moment_model(out / MOMENT_MODEL_FILE, head, model_name, window, hop)
    result: dict[str, Any] = {"moment_model": str(path), "model": model_name, "window": window, "hop": hop,
                              "train_queries": len(truth), "options": asdict(options),
                              "teachers": (list(teachers) or [model_name]) if options.distill_weight > 0 else [],
                              "loss_first": round(log[0], 4), "loss_last": round(log[-1], 4)}
    if eval_split is not None:
        from soundsift.data.readers.moment_layout import load_moment_split

        split, predictions, _ = learned_predictions(path, data_root, eval_split, model_name, batch_size, skip_invalid)
        pred_path = write_predictions(out / f"moments_learned_{split}.jsonl", predictions)
        _, evaluated = load_moment_split(data_root, split, skip_invalid, log=lambda message: None)
        truth = [q.windows for rec in evaluated for q in rec.queries]
        metrics = moment_retrieval_metrics(truth, [p["pred_relevant_windows"] for p in predictions])
        result["eval"] = {"split": split, "predictions": str(pred_path), **metrics}
    data = (json.dumps(result, indent=2) + "\n").encode()

    def write(tmp: Path) -> None:
        tmp.write_bytes(data)

    atomic_write(out / "result.json", write)
    return result
