"""``index watch``: a temporary folder of real (generated) sound files changes while a Watcher runs;
the index follows within a bounded time (add, modify, move, delete, a file copied in slowly, a folder
that disappears and returns, a restart that catches up). And ``serve`` switches to each new version
under concurrent requests with no failed request."""

from __future__ import annotations

import shutil
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("watchdog", reason="the watch extra (watchdog) is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import served
from soundsift.search.build import build_index, update_index  # noqa: E402
from soundsift.search.index import open_index  # noqa: E402
from soundsift.search.watch import Watcher, WatchOptions  # noqa: E402
from test_index import make_library, make_model, write_sound  # noqa: E402

LIMIT = 30.0  # seconds any change may take to reach the index (debounce 0.3 s; a slow shared machine)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("model") / "model.pt")


def _paths(out: Path) -> dict[str, tuple[int, str]]:
    return {e.path: (e.size, e.sha256) for e in open_index(out).entries}


def _until(condition, what: str, limit: float = LIMIT):
    deadline = time.monotonic() + limit
    while True:
        try:
            value = condition()
        except Exception:  # noqa: BLE001 - the index may be between versions only for a reader that races cleanup
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {limit:g} s waiting for {what}"
        time.sleep(0.1)


class Running:
    """A Watcher in a thread, with the lines it reported."""

    def __init__(self, folder: Path, out: Path, model: Path | None) -> None:
        self.lines: list[str] = []
        self.watcher = Watcher(folder, out, model, WatchOptions(debounce=0.3, poll=0.2), report=self.lines.append)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.watcher.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        _until(lambda: self.watcher.updates >= 1, "the first rescan")
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(20)
        assert not self.thread.is_alive()


def test_watch_follows_adds_changes_moves_and_deletes(tmp_path, model_path):
    folder = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    with Running(folder, out, model_path) as run:
        start = _paths(out)
        assert "animals/dog.wav" in start and run.lines[0].startswith("rescan: indexed")

        write_sound(folder / "new/siren.flac", 32000, 1, 0.7, "FLAC", None, seed=40)
        _until(lambda: "new/siren.flac" in _paths(out), "an added file")

        write_sound(folder / "animals/dog.wav", 16000, 1, 1.3, "WAV", None, seed=41)
        _until(lambda: _paths(out)["animals/dog.wav"] != start["animals/dog.wav"], "a changed file")

        (folder / "weather/rain.flac").rename(folder / "rain-moved.flac")
        _until(lambda: "rain-moved.flac" in _paths(out) and "weather/rain.flac" not in _paths(out), "a move")
        assert _paths(out)["rain-moved.flac"] == start["weather/rain.flac"]

        shutil.move(str(folder / "animals"), str(folder / "fauna"))  # a folder moved
        _until(lambda: "fauna/dog.wav" in _paths(out) and not any(p.startswith("animals/") for p in _paths(out)),
               "a moved folder")

        (folder / "machines/engine.mp3").unlink()
        _until(lambda: "machines/engine.mp3" not in _paths(out), "a deletion")

        # a file copied in slowly: never indexed half-written
        data = (0.3 * np.sin(np.arange(16000 * 3) / 10)).astype(np.float32)
        sf.write(str(tmp_path / "whole.wav"), data, 16000)
        whole = (tmp_path / "whole.wav").read_bytes()
        with open(folder / "slow.wav", "wb") as f:
            for i in range(0, len(whole), len(whole) // 10):
                f.write(whole[i:i + len(whole) // 10])
                f.flush()
                time.sleep(0.15)
        _until(lambda: "slow.wav" in _paths(out), "a slowly copied file")
        assert _paths(out)["slow.wav"][0] == len(whole)
        assert not any("slow.wav" in line and "skipped" in line for line in run.lines)
    final = build_index(folder, tmp_path / "fresh", model_path, progress=False)
    assert _paths(out) == _paths(tmp_path / "fresh") and final.files == len(_paths(out))


def test_a_folder_that_disappears_is_reported_and_watching_resumes(tmp_path, model_path):
    folder = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    with Running(folder, out, model_path) as run:
        before = _paths(out)
        folder.rename(tmp_path / "away")
        _until(lambda: any("missing or unreadable" in line for line in run.lines), "the report of a missing folder")
        assert _paths(out) == before  # nothing removed while it is away
        write_sound(tmp_path / "away/late.wav", 16000, 1, 0.5, "WAV", None, seed=50)
        (tmp_path / "away").rename(folder)
        _until(lambda: "late.wav" in _paths(out), "the folder's return (a rescan)")
        assert any("is back" in line for line in run.lines)
        write_sound(folder / "after.wav", 16000, 1, 0.5, "WAV", None, seed=51)
        _until(lambda: "after.wav" in _paths(out), "events after the return")


def test_a_restart_catches_up_with_changes_made_while_stopped(tmp_path, model_path):
    folder = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    with Running(folder, out, model_path):
        pass
    write_sound(folder / "while-stopped.wav", 16000, 1, 0.5, "WAV", None, seed=60)
    (folder / "long.wav").unlink()
    with Running(folder, out, None) as run:  # the model recorded in the index
        paths = _paths(out)
        assert "while-stopped.wav" in paths and "long.wav" not in paths
        assert "1 added" in run.lines[0] and "1 removed" in run.lines[0]


def test_serve_switches_versions_under_concurrent_requests(tmp_path, model_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    import json

    from soundsift.search.server import create_app

    folder = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(folder, out, model_path, progress=False)
    app = create_app(out)
    app.state.live.interval = 0.05
    errors: list[str] = []
    seen: list[set[str]] = []
    stop = threading.Event()

    def client(i: int) -> None:
        while not stop.is_set():
            try:
                url = f"http://127.0.0.1:{port}/api/search?q=sound+{i}&k=100"
                with urllib.request.urlopen(url, timeout=20) as r:
                    seen.append({h["path"] for h in json.loads(r.read())})
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=20) as r:
                    json.loads(r.read())
            except Exception as exc:  # noqa: BLE001 - every failure counts
                errors.append(repr(exc))

    clients = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
    with served(app) as port:
        for c in clients:
            c.start()
        try:
            for step in range(4):
                write_sound(folder / f"added{step}.wav", 16000, 1, 0.5, "WAV", None, seed=70 + step)
                update_index(out, [f"added{step}.wav"] + (["long.wav"] if step == 2 else []))
                if step == 2:
                    (folder / "long.wav").unlink()
                    update_index(out, ["long.wav"])
                _until(lambda s=step: any(f"added{s}.wav" in paths for paths in seen[-6:]), f"version {step} served")
            assert app.state.live.reloads >= 4
            assert any("long.wav" not in paths and "added3.wav" in paths for paths in seen[-6:])
        finally:
            stop.set()
            for c in clients:
                c.join(30)
    assert errors == [] and len(seen) > 10


def test_a_file_replaced_while_it_is_decoded_is_indexed_again_on_its_event(tmp_path, model_path, monkeypatch):
    """The row records the size and mtime seen before decoding, so the replacement (and the event it
    raises) re-embeds the file: the index ends equal to a fresh build."""
    import os

    import soundsift.search.scan as scan

    folder = make_library(tmp_path / "sounds")
    out = tmp_path / "idx"
    build_index(folder, out, model_path, progress=False)
    write_sound(folder / "new.wav", 16000, 1, 0.8, "WAV", None, seed=80)
    real = scan.read_audio

    def replaced_midway(path):
        wave = real(path)
        if Path(path).name == "new.wav" and not (tmp_path / "done").exists():
            (tmp_path / "done").touch()
            write_sound(folder / "new.wav", 16000, 1, 1.1, "WAV", None, seed=81)  # replaced while decoding
            st = os.stat(folder / "new.wav")
            os.utime(folder / "new.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        return wave

    monkeypatch.setattr(scan, "read_audio", replaced_midway)
    update_index(out, ["new.wav"])
    monkeypatch.undo()
    again = update_index(out, ["new.wav"])  # what the watcher does on the replacement's event
    assert again.updated == 1 and again.embedded == 1
    build_index(folder, tmp_path / "fresh", model_path, progress=False)
    a, b = open_index(out), open_index(tmp_path / "fresh")
    va = {e.path: np.asarray(a.embeddings[i]) for i, e in enumerate(a.entries)}
    vb = {e.path: np.asarray(b.embeddings[i]) for i, e in enumerate(b.entries)}
    assert _paths(out) == _paths(tmp_path / "fresh")
    np.testing.assert_allclose(va["new.wav"], vb["new.wav"], atol=1e-6)


def test_a_file_that_grows_without_events_stays_pending(tmp_path, model_path):
    folder = tmp_path / "sounds"
    folder.mkdir()
    watcher = Watcher(folder, tmp_path / "idx", model_path, WatchOptions(debounce=0.2), report=lambda line: None)
    (folder / "a.wav").write_bytes(b"RIFF" + bytes(100))
    watcher.note(str(folder / "a.wav"))
    watcher.note(str(folder / ".hidden.wav"))  # ignored, as the index ignores hidden files
    watcher.note(str(tmp_path / "idx" / "CURRENT"))  # the index itself: ignored
    assert watcher.ready() == []  # too recent
    time.sleep(0.25)
    with open(folder / "a.wav", "ab") as f:  # grew after its last event (no event seen)
        f.write(bytes(100))
    assert watcher.ready() == []  # changed since its event: looked at again later
    time.sleep(0.25)
    assert watcher.ready() == ["a.wav"]
    (folder / "a.wav").unlink()
    watcher.note(str(folder / "a.wav"))
    time.sleep(0.25)
    assert watcher.ready() == ["a.wav"]  # a deletion is applied once its event is old enough
