"""``evaluate --task moments``: a prediction file in the task's format scored against moment annotations,
or a baseline's predictions (a sliding window over a model, or random windows) written and scored."""

from __future__ import annotations

from pathlib import Path

from soundsift.data.readers.moment_layout import report_skipped
from soundsift.data.readers.moments import SkippedLine, read_moment_annotations, read_moment_predictions
from soundsift.errors import DatasetError
from soundsift.metrics.moments import MAX_PREDICTIONS, moment_retrieval_metrics


def evaluate_moments(predictions: str | Path, annotations: str | Path, skip_invalid: bool = False,
                     report: bool = True) -> dict[str, object]:
    """R1@0.5/0.7, mAP@0.5/0.75 and mAP (percent, as lighthouse reports them) of ``predictions``.

    A query of the annotations that the predictions lack scores 0 (counted in ``n_without_prediction``);
    a prediction for a qid the annotations do not hold is refused (DatasetError naming both files).
    An invalid annotation line is refused, or with ``skip_invalid`` left out (with its predictions) and
    reported on stderr (unless not ``report``); ``n_skipped`` counts them.
    """
    skipped: list[SkippedLine] | None = [] if skip_invalid else None
    queries = [q for recording in read_moment_annotations(annotations, skipped=skipped) for q in recording.queries]
    if report:
        report_skipped(annotations, skipped or [], len(queries))
    predicted = read_moment_predictions(predictions)
    # the predictions of skipped lines are not scored
    unknown = sorted(set(predicted) - {q.qid for q in queries} - {s.qid for s in skipped or []})
    if unknown:
        raise DatasetError(f"{predictions}: qid {unknown[0]!r} is not in {annotations} "
                           f"({len(unknown)} such predictions)")
    try:
        metrics = moment_retrieval_metrics([q.windows for q in queries], [predicted.get(q.qid) for q in queries])
    except ValueError as e:
        raise DatasetError(f"{annotations}: {e}") from None
    return {"task": "moments", "predictions": str(predictions), "annotations": str(annotations),
            "max_predictions": MAX_PREDICTIONS, **({"n_skipped": len(skipped)} if skipped is not None else {}),
            **metrics}


def evaluate_moment_baseline(model: str | list[str] | None, data_root: str | Path, split: str,
                             window: float | None = None, hop: float | None = None, out: str | Path | None = None,
                             batch_size: int = 32, baseline: str | None = None, seed: int = 0,
                             moment_model: str | Path | None = None, skip_invalid: bool = False) -> dict[str, object]:
    """Predict the moments of ``split`` of a moment benchmark (``synth --moments``, Clotho-Moment or
    CASTELLA in their published layouts: ``data.readers.moment_layout``) with ``baseline`` ("window": a sliding window over ``model``;
    "random": random windows; "learned": the saved ``moment_model``, over ``model``'s or the model it was
    trained on's cached window embeddings), write them to ``out`` (default: ``moments_{baseline}_{split}.jsonl`` under
    ``data_root``) and score them (``evaluate_moments``). Invalid annotation lines are refused, or with
    ``skip_invalid`` left out and reported."""
    from soundsift.checkpoints.windows import build_windows
    from soundsift.data.readers.moment_layout import load_moment_split
    from soundsift.errors import ConfigError
    from soundsift.spans import check_windows, default_windows
    from soundsift.training.moment_baseline import (
        random_predictions,
        sliding_window_predictions,
        write_predictions,
    )

    if baseline is None:  # the learned model beat the sliding window on synth --moments small (docs/moments.md)
        baseline = "learned" if moment_model else "window"
    quiet = (lambda message: None) if baseline == "learned" else None  # the learned model's reader reports
    data, recordings = load_moment_split(data_root, split, skip_invalid, log=quiet)
    split = data.split
    out = Path(out) if out else Path(data_root) / f"moments_{baseline}_{split}.jsonl"
    if baseline == "learned":
        if not moment_model:
            raise ConfigError("evaluate --task moments --baseline learned: give --moment-model RUN/moment_model.pt")
        from soundsift.training.moment_train import learned_predictions

        if isinstance(model, list) and len(model) > 1:
            raise ConfigError("evaluate --task moments: one --model for the learned moment model")
        given = model[0] if isinstance(model, list) and model else model or None
        split, predictions, used = learned_predictions(moment_model, data_root, split, given, batch_size, skip_invalid)
        name, window, hop = used["model"], used["window"], used["hop"]
    elif baseline == "random":
        window, hop = check_windows(*(default_windows(None) if window is None else (window, hop)), None)
        predictions = random_predictions(recordings, window, seed)
        name = None
    elif baseline == "window":
        if not model:
            raise ConfigError("evaluate --task moments: give --model (or --baseline random) with --data-root")
        from soundsift.checkpoints import load_model

        name = model[0] if isinstance(model, list) and len(model) == 1 else model
        if isinstance(name, list):
            raise ConfigError("evaluate --task moments: one --model for the sliding-window baseline")
        loaded = load_model(name)
        window, hop = build_windows(loaded, window, hop)
        if not window:
            raise ConfigError("--window 0: the sliding-window baseline needs a window above 0 s")
        predictions = sliding_window_predictions(loaded, recordings, data.audio, window, hop, batch_size)
    else:
        raise ConfigError(f"--baseline {baseline!r}: use window, learned or random")
    write_predictions(out, predictions)
    return {"baseline": baseline, "model": name, "split": split, "window": window, "hop": hop,
            **evaluate_moments(out, data.annotations, skip_invalid, report=False)}
