"""``evaluate --task moments``: a prediction file in the task's format scored against moment annotations."""

from __future__ import annotations

from pathlib import Path

from soundsift.data.readers.moments import read_moment_annotations, read_moment_predictions
from soundsift.errors import DatasetError
from soundsift.metrics.moments import MAX_PREDICTIONS, moment_retrieval_metrics


def evaluate_moments(predictions: str | Path, annotations: str | Path) -> dict[str, object]:
    """R1@0.5/0.7, mAP@0.5/0.75 and mAP (percent, as lighthouse reports them) of ``predictions``.

    A query of the annotations that the predictions lack scores 0 (counted in ``n_without_prediction``);
    a prediction for a qid the annotations do not hold is refused (DatasetError naming both files).
    """
    queries = [q for recording in read_moment_annotations(annotations) for q in recording.queries]
    predicted = read_moment_predictions(predictions)
    unknown = sorted(set(predicted) - {q.qid for q in queries})
    if unknown:
        raise DatasetError(f"{predictions}: qid {unknown[0]!r} is not in {annotations} "
                           f"({len(unknown)} such predictions)")
    try:
        metrics = moment_retrieval_metrics([q.windows for q in queries], [predicted.get(q.qid) for q in queries])
    except ValueError as e:
        raise DatasetError(f"{annotations}: {e}") from None
    return {"task": "moments", "predictions": str(predictions), "annotations": str(annotations),
            "max_predictions": MAX_PREDICTIONS, **metrics}
