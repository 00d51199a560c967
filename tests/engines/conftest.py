"""Fixtures of the Flower deployment tests."""

from __future__ import annotations

import pytest

from fedhello.engines.flower.deploy import LocalDeployment


@pytest.fixture
def started(monkeypatch):
    """Every LocalDeployment the test starts, and the pids its `stop()` calls reported, to check afterwards
    that its processes are gone."""
    deployments: list[LocalDeployment] = []
    stopped: dict[int, set[int]] = {}
    start, stop = LocalDeployment.start, LocalDeployment.stop

    def spy_start(self):
        deployments.append(self)
        return start(self)

    def spy_stop(self):
        pids = stop(self)
        stopped.setdefault(id(self), set()).update(pids)
        return pids

    monkeypatch.setattr(LocalDeployment, "start", spy_start)
    monkeypatch.setattr(LocalDeployment, "stop", spy_stop)
    yield deployments, stopped
    for deployment in deployments:  # never leave processes behind, whatever the test did
        stop(deployment)
