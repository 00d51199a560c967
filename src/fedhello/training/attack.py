"""Simulated hostile clients (`attack:`): a hostile client trains as usual, then replaces the tensors it uploads by
a poisoned version. Applied by `LocalTrainer.train`, which every engine's clients run, so an attack behaves the
same in-process and on a Flower node.

With W the global tensor the client received and W_i the one it trained (the uploaded part: the leading block of
W for a rank-truncated factor), a hostile client sends

  sign_flip   W - s (W_i - W)        its update reversed (s = 1) and scaled
  scaled      W + s (W_i - W)        its update blown up (s > 1)
  random      W + s * rms(W_i - W) * N(0, 1)   noise as large as its honest change of that tensor, drawn from
                                     `round_rng(seed, round, ATTACK, client)`, so a resumed run draws it again

Which clients are hostile is fixed for the whole run: `attack.hostile_ids`, or `attack.hostile` of them drawn from
the run's seed (`hostile_clients`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedhello.config import AttackConfig, RunConfig
from fedhello.seeding import ATTACK, hostile_rng, round_rng


def hostile_clients(config: RunConfig) -> frozenset[int]:
    """The ids of the run's hostile clients (empty when `attack:` is off), the same in every round and process."""
    attack = config.attack
    if attack.hostile_ids:
        return frozenset(attack.hostile_ids)
    if not attack.hostile:
        return frozenset()
    chosen = hostile_rng(config.seed).choice(config.federation.num_clients, attack.hostile, replace=False)
    return frozenset(int(c) for c in chosen)


def _leading(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The block of the global `tensor` an upload of `shape` replaces (all of it unless rank-truncated)."""
    return tensor[tuple(slice(0, n) for n in shape)]


def _sign_flip(delta: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    return -scale * delta


def _scaled(delta: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    return scale * delta


def _random(delta: torch.Tensor, scale: float, generator: torch.Generator) -> torch.Tensor:
    rms = delta.pow(2).mean().sqrt() if delta.numel() else delta.new_zeros(())
    return scale * rms * torch.randn(delta.shape, generator=generator, dtype=torch.float64)


# attack.kind -> the change a hostile client sends, from its honest change (float64), the scale and its generator
KINDS: dict[str, Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]] = {
    "sign_flip": _sign_flip,
    "scaled": _scaled,
    "random": _random,
}


def poison(
    attack: AttackConfig,
    tensors: dict[str, torch.Tensor],
    global_state: dict[str, torch.Tensor],
    seed: int,
    round_num: int,
    client_id: int,
) -> dict[str, torch.Tensor]:
    """The tensors a hostile client sends instead of its trained `tensors` (new tensors, same shapes and dtypes;
    the inputs are not modified). Computed in float64."""
    change = KINDS[attack.kind]
    generator = torch.Generator().manual_seed(int(round_rng(seed, round_num, ATTACK, client_id).integers(2**62)))
    out: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):  # sorted: the noise of a tensor does not depend on the upload's key order
        trained = tensors[name]
        base = _leading(global_state[name], trained.shape).to(torch.float64)
        delta = trained.detach().to(torch.float64) - base
        out[name] = (base + change(delta, attack.scale, generator)).to(trained.dtype)
    return out
