"""Decoding ahead of the model (``search.decoding.prefetch``): order kept, the budget held, errors raised
to the caller, and a caller that stops early stops the thread."""

from __future__ import annotations

import threading
import time

import pytest

from soundsift.search.decoding import prefetch


def test_items_come_in_order_and_the_thread_works_ahead_within_the_budget():
    pulled = []
    sizes = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]

    def items():
        for i, n in enumerate(sizes):
            pulled.append(i)
            yield (i, n)

    it = prefetch(items(), budget=10, size=lambda item: item[1])
    first = next(it)
    time.sleep(0.3)  # the thread pulls ahead while the caller "embeds"
    # item 0 taken; items 1-3 held (1 + 4 + 1 = 6); item 4 (5) would pass 10: pulled, waiting to be put
    assert len(pulled) == 5
    assert [i for i, _ in [first, *it]] == list(range(len(sizes)))


def test_one_item_over_the_budget_still_passes():
    assert list(prefetch(iter([(0, 50), (1, 70)]), budget=10, size=lambda item: item[1])) == [(0, 50), (1, 70)]


def test_an_error_in_the_items_reaches_the_caller_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(items(), budget=100, size=lambda _: 1):
            got.append(item)
    assert got == [1, 2]


def test_a_caller_that_stops_early_stops_the_thread():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = prefetch(items(), budget=4, size=lambda _: 1)
    assert [next(it) for _ in range(3)] == [0, 1, 2]
    it.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
