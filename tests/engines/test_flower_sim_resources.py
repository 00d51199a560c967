"""GPU shares of flower-sim's virtual clients (`flower.client_gpus`): Ray hides the GPU from an actor with 0."""

from __future__ import annotations

import pytest

from fedhello.engines.flower.sim import backend_config, client_gpus
from fedhello.errors import ConfigError


def with_flower(tiny_config, device="cpu", gpus=None, clients=20, cpus=1.0):  # noqa: ANN001, ANN201
    config = tiny_config.model_copy(deep=True)
    config.train.device = device
    config.flower.client_gpus = gpus
    config.federation.num_clients = clients
    config.flower.client_cpus = cpus
    return config


def test_auto_shares_the_visible_gpus_among_the_actors_that_run_at_once(tiny_config):
    assert client_gpus(with_flower(tiny_config, "cuda"), cores=16, gpus=1) == pytest.approx(1 / 16)
    assert client_gpus(with_flower(tiny_config, "auto", cpus=4.0), cores=16, gpus=1) == pytest.approx(1 / 4)
    assert client_gpus(with_flower(tiny_config, "cuda", clients=2), cores=16, gpus=1) == pytest.approx(1 / 2)
    assert client_gpus(with_flower(tiny_config, "cuda", clients=2), cores=16, gpus=4) == 1.0


def test_auto_is_cpu_without_a_gpu_or_on_cpu_training(tiny_config):
    assert client_gpus(with_flower(tiny_config, "auto"), cores=16, gpus=0) == 0.0
    assert client_gpus(with_flower(tiny_config, "cpu"), cores=16, gpus=1) == 0.0


def test_an_explicit_share_is_kept_and_needs_a_gpu(tiny_config):
    assert client_gpus(with_flower(tiny_config, "cuda", gpus=0.25), cores=16, gpus=1) == 0.25
    with pytest.raises(ConfigError, match="flower.client_gpus.*no GPU"):
        client_gpus(with_flower(tiny_config, "cuda", gpus=0.5), cores=2, gpus=0)


def test_backend_config_on_this_machine(tiny_config):
    import torch

    resources = backend_config(with_flower(tiny_config))
    assert resources["client_resources"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    assert resources["init_args"]["num_gpus"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
