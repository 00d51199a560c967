"""The ClientApp's worker: what a SuperNode loads. A node started with `--node-config quantization=nf4` builds its
model in nf4 from the start (a device that cannot hold the full-precision model must never load it) and trains
every client on it, whatever the clients' tiers ask."""

from __future__ import annotations

import pytest

from fedhello.engines.flower.clientapp import Worker
from fedhello.models.quantize import resolve
from fedhello.tasks.base import Task

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture
def builds(monkeypatch) -> list[str]:  # noqa: ANN001
    """The quantization of every model `Task.build_model` loads, in order."""
    seen: list[str] = []
    real = Task.build_model

    def spy(self, quantization=None):  # noqa: ANN001, ANN202
        seen.append(resolve(quantization, self.config))
        return real(self, quantization)

    monkeypatch.setattr(Task, "build_model", spy)
    return seen


def tiered(tiny_config):  # noqa: ANN001, ANN201
    config = tiny_config.model_copy(deep=True)
    config.output.plot = False
    config.tiers[0].quantization, config.tiers[1].quantization = "int8", "none"  # the tiers ask for others
    return config


def test_a_node_quantization_is_the_only_model_its_worker_loads(tiny_config, builds):
    config = tiered(tiny_config)
    worker = Worker(config, None, "nf4")
    trainers = [worker.trainer(cid) for cid in range(config.federation.num_clients)]
    assert builds == ["nf4"], "built once, in the node's quantization: never full precision first, nor a tier's"
    assert all(trainer is trainers[0] for trainer in trainers), "every client trains on the node's model"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainers[0].model.modules())


def test_without_a_node_quantization_the_tiers_decide(tiny_config, builds):
    config = tiered(tiny_config)
    worker = Worker(config, None)
    quantizations = {worker.trainers.quantizations[0]}
    for cid in range(config.federation.num_clients):
        worker.trainer(cid)
    quantizations |= set(worker.trainers.quantizations)
    assert builds == ["none", "int8"] and quantizations == {"none", "int8"}
