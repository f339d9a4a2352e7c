"""An index build that survives hostile files: a decoder that hangs (a named pipe nobody writes to) is
given up after the time limit, a decoding worker killed by the test is replaced and its file reported,
and the build completes either way; ``--stats`` reports the time per stage."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from soundsift.search.build import build_index
from soundsift.search.decoding import ProcessDecoders, ThreadDecoders
from soundsift.search.index import open_index
from soundsift.search.scan import Decoded, Failed
from soundsift.search.stats import STAGES

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes (POSIX) make the hanging file")


def library(root: Path, n: int = 4) -> list[str]:
    root.mkdir()
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"clip{i}.wav"
        sf.write(root / name, (0.1 * rng.standard_normal(8000 + 1000 * i)).astype(np.float32), 16000)
        names.append(name)
    os.mkfifo(root / "aaa-pipe.wav")  # opening it for reading blocks until a writer comes: a hanging decode
    return names


def release(pipe: Path) -> None:
    """Let a reader still blocked on the pipe go (it then reads an empty file)."""
    try:
        fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.fixture
def model_file(tmp_path):
    from tests.test_index import make_model

    return make_model(tmp_path / "model.pt")


@pytest.mark.parametrize("pool", [ProcessDecoders, ThreadDecoders])
def test_a_hanging_decoder_is_given_up_after_the_limit_and_the_rest_decodes(pool, tmp_path):
    names = library(tmp_path / "lib")
    paths = [tmp_path / "lib" / "aaa-pipe.wav"] + [tmp_path / "lib" / n for n in names]
    start = time.monotonic()
    try:
        with pool(2, 16000, timeout=1.5) as decoders:
            results = list(decoders.map(paths))
    finally:
        release(paths[0])
    assert isinstance(results[0], Failed) and "longer than 1.5 s" in results[0].reason
    assert all(isinstance(r, Decoded) for r in results[1:])
    assert [len(r.wave) for r in results[1:]] == [8000 + 1000 * i for i in range(len(names))]
    assert time.monotonic() - start < 30


@pytest.mark.slow
def test_a_build_with_a_hanging_file_completes_and_reports_it(model_file, tmp_path):
    names = library(tmp_path / "lib")
    try:
        report = build_index(tmp_path / "lib", tmp_path / "idx", model_file, progress=False, processes=True,
                             workers=2, decode_timeout=2.0, window=0)
    finally:
        release(tmp_path / "lib" / "aaa-pipe.wav")
    assert [s["path"] for s in report.skipped] == ["aaa-pipe.wav"]
    assert "longer than 2 s" in report.skipped[0]["reason"]
    assert sorted(e.path for e in open_index(tmp_path / "idx").entries) == names
    assert set(report.stages) == set(STAGES) and report.stages["model"] > 0


@pytest.mark.slow
def test_a_decoding_worker_killed_by_sigkill_is_replaced_and_its_file_reported(model_file, tmp_path):
    names = library(tmp_path / "lib")
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = build_index(tmp_path / "lib", tmp_path / "idx", model_file, progress=False,
                                            processes=True, workers=1, decode_timeout=120.0, window=0)
        except BaseException as exc:  # noqa: BLE001  (reported by the assertion below)
            outcome["error"] = exc

    builder = threading.Thread(target=run)
    builder.start()
    try:
        victim = None
        deadline = time.monotonic() + 60
        while victim is None and time.monotonic() < deadline:  # the one worker, stuck on the pipe
            children = multiprocessing.active_children()
            victim = children[0] if children else None
            time.sleep(0.2)
        assert victim is not None, "no decoding worker started"
        time.sleep(1.0)  # it has taken the first file (the pipe) and blocks there
        os.kill(victim.pid, signal.SIGKILL)
        builder.join(timeout=120)
    finally:
        release(tmp_path / "lib" / "aaa-pipe.wav")
        builder.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert [s["path"] for s in report.skipped] == ["aaa-pipe.wav"]
    assert "SIGKILL" in report.skipped[0]["reason"]
    assert sorted(e.path for e in open_index(tmp_path / "idx").entries) == names
