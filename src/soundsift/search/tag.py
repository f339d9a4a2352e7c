"""Zero-shot tagging: rank free-text labels for audio files, each label embedded as a text query."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from soundsift.errors import CaptionError, ConfigError

DEFAULT_TEMPLATE = "{label}"


def parse_labels(labels: str | None = None, labels_file: str | Path | None = None) -> list[str]:
    """Labels from a comma-separated string and/or a file with one label per line (deduplicated)."""
    found: list[str] = []
    if labels:
        found += [x.strip() for x in labels.split(",")]
    if labels_file is not None:
        path = Path(labels_file)
        try:
            found += [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
        except OSError as exc:
            raise FileNotFoundError(f"{path}: cannot read the labels file ({exc.strerror or exc})") from exc
    out = list(dict.fromkeys(x for x in found if x))
    if not out:
        raise ConfigError("no labels given: pass --labels 'dog,rain,...' or --labels-file FILE")
    return out


def prompts(labels: Sequence[str], template: str = DEFAULT_TEMPLATE) -> list[str]:
    """Apply a prompt template such as "the sound of {label}" to each label."""
    if "{label}" not in template:
        raise ConfigError(f"prompt template {template!r} must contain {{label}}")
    try:
        return [template.format(label=label) for label in labels]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"prompt template {template!r} is malformed ({exc}); only {{label}} is allowed") from exc


def tag_files(
    model,
    files: Sequence[str | Path],
    labels: Sequence[str],
    template: str = DEFAULT_TEMPLATE,
    top: int | None = None,
) -> list[dict[str, Any]]:
    """For each file, the labels ranked by cosine similarity, best first.

    Each result is ``{"file", "labels": [{"label", "score", "probability"}]}``; ``score`` is the cosine
    similarity and ``probability`` a softmax over the given labels at the model's temperature ``model.tau``.
    """
    from soundsift.audio import load_audio

    texts = prompts(labels, template)
    try:  # before the audio: a bad label fails fast
        text_vectors = model.embed_texts(texts)
    except CaptionError as exc:  # nothing left once normalised: "!!!"
        raise exc.as_input("label", labels[texts.index(exc.text)] if exc.text in texts else None) from exc
    waves = [load_audio(f, model.sample_rate) for f in files]
    audio = model.embed_waveforms(waves, batch_size=8)
    sims = audio @ text_vectors.T  # (n_files, n_labels)
    logits = sims / float(model.tau)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    results = []
    for f, srow, prow in zip(files, sims, probs):
        order = sorted(range(len(labels)), key=lambda j: (-srow[j], j))[: top or None]
        results.append({
            "file": str(f),
            "labels": [{"label": labels[j], "score": round(float(srow[j]), 6),
                        "probability": round(float(prow[j]), 6)} for j in order],
        })
    return results
