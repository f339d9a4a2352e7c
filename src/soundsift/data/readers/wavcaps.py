"""WavCaps reader: one JSON file per source, FLAC audio per source, DCASE 2024 FreeSound exclusions.

Layout under ``root`` (JSON as published in the Hugging Face repo cvssp/WavCaps, either directly under
``root`` or under ``root/json_files/``)::

    root/AudioSet_SL/as_final.json            {"data": [{"id", "caption", ...}, ...]}
    root/BBC_Sound_Effects/bbc_final.json
    root/FreeSound/fsd_final_2s.json          (fsd_final.json accepted when the _2s file is absent)
    root/SoundBible/sb_final.json
    root/audio/{source}/{id}.flac             e.g. root/audio/FreeSound/180913.flac
    root/dcase2024_task6_excluded_freesound_ids.csv   (found here automatically)

The audio paths stored in the JSON (``"audio"``, absolute paths on the authors' machines) are ignored:
each file is looked up by its id, minus a trailing ``.wav`` (AudioSet_SL ids carry one), with any
audio extension. The published archives extract to deep author paths; move each source's FLAC files
into ``root/audio/{source}/`` (``root/{source}/`` is accepted too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from soundsift.audio import AUDIO_EXTENSIONS
from soundsift.data.readers.common import AudioDir, audio_problem, first_audio_dir, read_csv_table
from soundsift.data.records import Clip, Problem, SplitData
from soundsift.errors import ConfigError, DatasetError

SOURCES: dict[str, tuple[str, ...]] = {
    "AudioSet_SL": ("as_final.json",),
    "BBC_Sound_Effects": ("bbc_final.json",),
    "FreeSound": ("fsd_final_2s.json", "fsd_final.json"),
    "SoundBible": ("sb_final.json",),
}
EXCLUDED_IDS_CSV = "dcase2024_task6_excluded_freesound_ids.csv"


@dataclass
class WavCapsSplit(SplitData):
    """SplitData plus how many clips each source gave and how many FreeSound clips were excluded."""

    per_source: dict[str, int] = field(default_factory=dict)
    excluded: int = 0


def _strip_audio_ext(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    return stem if dot and f".{ext.lower()}" in AUDIO_EXTENSIONS else name


def read_excluded_ids(path: str | Path) -> set[str]:
    """FreeSound ids from the DCASE 2024 exclusion CSV.

    The id column is the one named ``id``/``freesound_id``/``sound_id`` (any case), else the first
    column; a header that is itself a number counts as an id (a list without header). Ids are read as
    text with a ``.wav``/``.flac`` suffix or a ``.0`` float tail removed. Raises DatasetError if the
    file is missing or unreadable.
    """
    path = Path(path)
    header, rows = read_csv_table(path, encodings=("utf-8-sig", "iso-8859-1"))
    lowered = [h.lower() for h in header]
    col = next((lowered.index(n) for n in ("id", "freesound_id", "sound_id", "fsd_id") if n in lowered), 0)
    values = [v[col] for _, v in rows if len(v) > col]
    if header and _clean_id(header[col]).isdigit():
        values.insert(0, header[col])
    return {c for v in values if (c := _clean_id(v))}


def _clean_id(value: str) -> str:
    text = _strip_audio_ext(value.strip())
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text


def _find_json(root: Path, source: str) -> Path | None:
    for folder in (root / source, root / "json_files" / source):
        for name in SOURCES[source]:
            if (folder / name).is_file():
                return folder / name
    return None


def _load_entries(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f'{path}: expected an object with a "data" list; found keys: {found}')
    return data["data"]


def read_wavcaps(
    root: str | Path,
    split: str = "train",
    exclude_ids_csv: str | Path | None = None,
    check_audio: bool = False,
    sources: tuple[str, ...] | None = None,
) -> WavCapsSplit:
    """Read WavCaps (training data only: ``split`` must be "train") as one split of single-caption clips.

    clip_id is ``"{source}/{id}"``. FreeSound clips whose id is in the DCASE 2024 exclusion list (they
    overlap Clotho's evaluation data) are dropped and counted in ``excluded``; the list is
    ``exclude_ids_csv`` or, when None, ``root/dcase2024_task6_excluded_freesound_ids.csv``; if neither
    exists a Problem says that nothing was excluded. A missing source JSON is a Problem (pass
    ``sources`` to read only some); when none is found, or a JSON lacks a ``"data"`` list, DatasetError.
    ``Problem.row`` is the 1-based entry number in the JSON "data" list.
    """
    if split not in ("train", "training"):
        raise ConfigError(f"WavCaps has only a training split, got split={split!r}")
    root = Path(root)
    wanted = tuple(SOURCES) if sources is None else sources
    unknown = [s for s in wanted if s not in SOURCES]
    if unknown:
        raise ConfigError(f"unknown WavCaps source(s) {unknown}; known: {', '.join(SOURCES)}")

    problems: list[Problem] = []
    excl_path = Path(exclude_ids_csv) if exclude_ids_csv is not None else root / EXCLUDED_IDS_CSV
    excluded_ids: set[str] = set()
    if "FreeSound" in wanted:
        if excl_path.is_file() or exclude_ids_csv is not None:
            excluded_ids = read_excluded_ids(excl_path)
        else:
            problems.append(
                Problem(
                    str(excl_path),
                    None,
                    "DCASE 2024 exclusion list not found: FreeSound clips that overlap "
                    "Clotho evaluation data are NOT excluded",
                )
            )

    found = {s: _find_json(root, s) for s in wanted}
    if not any(found.values()):
        names = ", ".join(f"{s}/{SOURCES[s][0]}" for s in wanted)
        raise DatasetError(f"{root}: no WavCaps JSON found (looked for {names}, also under json_files/)")

    clips: list[Clip] = []
    per_source: dict[str, int] = {}
    n_excluded = 0
    for source, json_path in found.items():
        if json_path is None:
            problems.append(
                Problem(str(root / source / SOURCES[source][0]), None, "JSON not found; source skipped")
            )
            continue
        file = str(json_path)
        audio_dir = AudioDir(first_audio_dir([root / "audio" / source, root / source]))
        if audio_dir.path is None:
            problems.append(
                Problem(file, None, f"no audio folder {root / 'audio' / source}/; source skipped")
            )
            continue
        seen: dict[str, int] = {}
        count = 0
        for row, entry in enumerate(_load_entries(json_path), start=1):
            raw_id = entry.get("id") if isinstance(entry, dict) else None
            caption = entry.get("caption") if isinstance(entry, dict) else None
            if raw_id is None or str(raw_id).strip() == "":
                problems.append(Problem(file, row, "entry without id; skipped"))
                continue
            clip_key = _strip_audio_ext(str(raw_id).strip())
            if source == "FreeSound" and _clean_id(clip_key) in excluded_ids:
                n_excluded += 1
                continue
            if clip_key in seen:
                problems.append(
                    Problem(
                        file, row, f"duplicate id {clip_key!r} (first at entry {seen[clip_key]}); skipped"
                    )
                )
                continue
            seen[clip_key] = row
            if not isinstance(caption, str) or not caption.strip():
                problems.append(Problem(file, row, f"empty or missing caption for id {clip_key!r}; skipped"))
                continue
            path = audio_dir.find_stem(clip_key)
            why = audio_problem(path or audio_dir.path / f"{clip_key}.flac", check_audio)
            if path is None or why is not None:
                problems.append(Problem(file, row, f"{why}; clip skipped"))
                continue
            clips.append(Clip(clip_id=f"{source}/{clip_key}", path=path, captions=(caption.strip(),)))
            count += 1
        per_source[source] = count
    return WavCapsSplit(
        name="wavcaps/train", clips=clips, problems=problems, per_source=per_source, excluded=n_excluded
    )
