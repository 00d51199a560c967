"""fedhello's `flower-supernode` entry point: Flower's SuperNode with its fixed idle sleeps capped."""

from __future__ import annotations

import time

from fedhello.engines.flower.app import OBJECT_PULL_RETRY, shorten_object_pull_retry
from fedhello.engines.flower.supernode import _CappedSleep


def test_sleeps_are_capped_and_the_rest_of_time_is_unchanged():
    capped = _CappedSleep(0.01)
    started = time.monotonic()
    capped.sleep(3)  # Flower's idle poll
    assert time.monotonic() - started < 1.0
    assert capped.time is time.time and capped.monotonic is time.monotonic


def test_object_pulls_retry_sooner_in_this_process(monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(pull, "__kwdefaults__", dict(pull.__kwdefaults__))  # restored after the test
    shorten_object_pull_retry()
    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert {k: pull.__kwdefaults__[k] for k in OBJECT_PULL_RETRY} == OBJECT_PULL_RETRY
        assert pull.__kwdefaults__["initial_backoff"] < 1  # Flower's own default is 1 s
