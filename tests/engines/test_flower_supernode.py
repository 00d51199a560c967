"""fedhello's `flower-supernode` entry point: Flower's SuperNode with its fixed idle sleeps capped."""

from __future__ import annotations

import time

from fedhello.engines.flower.supernode import _CappedSleep


def test_sleeps_are_capped_and_the_rest_of_time_is_unchanged():
    capped = _CappedSleep(0.01)
    started = time.monotonic()
    capped.sleep(3)  # Flower's idle poll
    assert time.monotonic() - started < 1.0
    assert capped.time is time.time and capped.monotonic is time.monotonic
