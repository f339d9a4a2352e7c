"""Decoding a library that may hold hostile files: each file is decoded in a worker process that can be
given up on. A file whose decoding takes longer than ``timeout`` seconds has its worker killed and is
reported (``Failed``); a worker that dies (killed, out of memory, a crash in a decoder library) is
replaced and its file reported. Either way the build goes on. Results come back in submission order,
with a bounded number of files in flight (memory stays bounded).

``ThreadDecoders`` is the light variant for small builds (no process start-up): a file over the limit
is reported the same way, but a thread cannot be stopped, so a decoder that never returns keeps its
(daemon) thread until the command exits.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Container, Iterator, Sequence
from pathlib import Path
from typing import Any

from soundsift.search.scan import DecodeResult, Failed, decode_file

#: Default limit on decoding one file, in seconds (``index build --decode-timeout``): generous for an hour
#: of FLAC on a slow disk, short enough that a hanging decoder does not stall a build for long.
DEFAULT_TIMEOUT = 120.0


def _worker(tasks: Any, results: Any, sample_rate: int, known: Container[str]) -> None:
    """A decoding process: one file at a time, until it gets None."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    while True:
        task = tasks.get()
        if task is None:
            return
        number, path = task
        results.put((number, None))  # started: the time limit counts from here, not from a slow spawn
        results.put((number, decode_file(Path(path), sample_rate, known)))


def died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        import signal

        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"the decoding process died ({name}: killed, or out of memory?); the file was skipped"
    return f"the decoding process died (exit code {exitcode}); the file was skipped"


class ProcessDecoders:
    """``workers`` spawned decoding processes, each watched (``timeout``, death) and replaced."""

    def __init__(self, workers: int, sample_rate: int, known: Container[str] = frozenset(),
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._results = self._ctx.Queue()
        self.sample_rate, self.known, self.timeout = sample_rate, known, timeout
        self._slots: list[dict[str, Any]] = [self._start() for _ in range(max(1, int(workers)))]
        self.replaced = 0

    def _start(self) -> dict[str, Any]:
        tasks = self._ctx.Queue()
        proc = self._ctx.Process(target=_worker, args=(tasks, self._results, self.sample_rate, self.known),
                                 daemon=True)
        proc.start()
        return {"proc": proc, "tasks": tasks, "task": None, "since": 0.0}

    def _replace(self, i: int) -> None:
        slot = self._slots[i]
        if slot["proc"].is_alive():
            slot["proc"].kill()
        slot["proc"].join(timeout=5)
        self._slots[i] = self._start()
        self.replaced += 1

    def map(self, paths: Sequence[Path]) -> Iterator[DecodeResult]:
        """Decode ``paths``; yields one result per path, in order."""
        done: dict[int, DecodeResult] = {}
        next_task, next_out = 0, 0
        ahead = 4 * len(self._slots)
        while next_out < len(paths):
            for slot in self._slots:  # keep every idle worker busy, within the look-ahead
                if slot["task"] is None and next_task < len(paths) and next_task - next_out < ahead:
                    slot["task"], slot["since"] = next_task, None
                    slot["tasks"].put((next_task, str(paths[next_task])))
                    next_task += 1
            try:
                self._receive(done, *self._results.get(timeout=0.05))
            except queue.Empty:
                pass
            self._watch(done)
            while next_out in done:
                yield done.pop(next_out)
                next_out += 1

    def _receive(self, done: dict[int, DecodeResult], number: int, result: DecodeResult | None) -> None:
        for slot in self._slots:
            if slot["task"] == number:
                if result is None:
                    slot["since"] = time.monotonic()
                else:
                    slot["task"] = None
        if result is not None:
            done[number] = result

    def _watch(self, done: dict[int, DecodeResult]) -> None:
        """Give up on a file over the time limit; report the file of a worker that died; replace both."""
        now = time.monotonic()
        for i, slot in enumerate(self._slots):
            number = slot["task"]
            if number is None or number in done:
                continue
            if not slot["proc"].is_alive():
                try:  # it may have sent its result just before dying
                    while number not in done:
                        self._receive(done, *self._results.get(timeout=0.2))
                    continue
                except queue.Empty:
                    pass
                done[number] = Failed(died(slot["proc"].exitcode))
                self._replace(i)
            elif self.timeout is not None and slot["since"] is not None and now - slot["since"] > self.timeout:
                done[number] = Failed(f"decoding took longer than {self.timeout:g} s (--decode-timeout): given up")
                self._replace(i)

    def close(self) -> None:
        for slot in self._slots:
            if slot["proc"].is_alive():
                slot["tasks"].put(None)
        for slot in self._slots:
            slot["proc"].join(timeout=2)
            if slot["proc"].is_alive():
                slot["proc"].kill()

    def __enter__(self) -> ProcessDecoders:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadDecoders:
    """Decoding threads (daemon) with the same time limit; see the module docstring."""

    def __init__(self, workers: int, sample_rate: int, known: Container[str] = frozenset(),
                 timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.workers, self.sample_rate, self.known, self.timeout = max(1, int(workers)), sample_rate, known, timeout
        self.replaced = 0

    def map(self, paths: Sequence[Path]) -> Iterator[DecodeResult]:
        slots: list[dict[str, Any]] = []
        next_task = 0

        def run(slot: dict[str, Any], path: Path) -> None:
            slot["result"] = decode_file(path, self.sample_rate, self.known)
            slot["event"].set()

        def submit() -> None:
            nonlocal next_task
            slot = {"event": threading.Event(), "result": None, "since": time.monotonic()}
            threading.Thread(target=run, args=(slot, paths[next_task]), daemon=True).start()
            slots.append(slot)
            next_task += 1

        for i in range(len(paths)):
            while next_task < len(paths) and next_task < i + 2 * self.workers:
                submit()
            slot = slots[i]
            left = None if self.timeout is None else max(0.0, self.timeout - (time.monotonic() - slot["since"]))
            if slot["event"].wait(left):
                yield slot["result"]
            else:
                self.replaced += 1
                yield Failed(f"decoding took longer than {self.timeout:g} s (--decode-timeout): given up")
            slots[i] = {}  # bounded memory

    def __enter__(self) -> ThreadDecoders:
        return self

    def __exit__(self, *exc: object) -> None:
        pass
