"""The generalisation benchmark's data files (benchmarks/data/generalise_*.csv): consistent, large enough,
and free of the packages reserved for independent checks. Reads the CSVs only (no audio)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
#: The packages checked against the list of packages reserved for independent checks (DEVELOPERS.md,
#: Standards); a new source is checked there and added here before the benchmark may use it.
APPROVED = {
    "deepin-sound-theme", "extremetuxracer-data", "freedink-data", "heroes-sound-effects", "ion-sound",
    "lincity-ng-data", "lmms-common", "oxygen-sounds", "pingus-data", "scratch", "sonic-pi-samples",
    "sound-theme-freedesktop", "tuxpaint-data", "tuxpaint-plugins-default", "tuxpaint-stamps-default",
    "yaru-theme-sound",
}


def _rows(name: str) -> list[dict[str, str]]:
    with open(DATA / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_relevant_sound_is_listed_in_its_own_source():
    sounds = {r["id"]: r for r in _rows("generalise_sounds.csv")}
    assert len(sounds) == len(_rows("generalise_sounds.csv"))  # ids are unique
    for q in _rows("generalise_queries.csv"):
        relevant = q["relevant"].split("|")
        assert q["query"].strip() and relevant and len(set(relevant)) == len(relevant), q
        for rid in relevant:
            assert rid in sounds, (q["query"], rid)
            assert sounds[rid]["source"] == q["source"], (q["query"], rid)
        assert not Path(sounds[relevant[0]]["path"]).is_absolute()


def test_the_benchmark_is_as_large_as_promised():
    sounds, queries = _rows("generalise_sounds.csv"), _rows("generalise_queries.csv")
    per_source = Counter(r["source"] for r in sounds)
    assert len(per_source) >= 8 and len(sounds) >= 600 and len(queries) >= 200
    assert set(Counter(q["source"] for q in queries)) == set(per_source)  # every source is queried
    assert sum("|" in q["relevant"] for q in queries) >= 100  # several relevant sounds where names say so
    assert len({(q["source"], q["query"]) for q in queries}) == len(queries)  # no query twice in a source


def test_only_approved_packages_are_used():
    packages = {r["package"] for r in _rows("generalise_sounds.csv")}
    assert packages and packages <= APPROVED, sorted(packages - APPROVED)
    for r in _rows("generalise_sounds.csv"):  # a sound is named by the package it is fetched from
        assert r["id"].startswith(r["package"] + "/"), r["id"]
