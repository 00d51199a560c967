"""ARD-LoRA's options (`strategy: {name: ard_lora, ...}`). The paper gives the objective, not values for this scale
(nor for a federation); the defaults are ours, untuned (docs/compare.md, "ARD-LoRA in a federation")."""

from __future__ import annotations

from pydantic import Field

from fedhello.config import StrategyConfig


class ARDLoRAOptions(StrategyConfig):
    """Every layer at a tier rank (the client's budget); learnable per-component rank gates decide how much of it a
    client uses, and components whose gate falls under `gate_threshold` are not sent."""

    l1: float = Field(
        1e-4,
        ge=0.0,
        description="ard_lora: weight of the l1 sparsity term on the rank gates (sum of |g| over every gated LoRA "
        "component; the continuous effective rank), added to the loss once per optimizer step. AdamW moves a gate "
        "about gate_lr per step whatever the weights: l1 decides whether a gate's task gradient or the sparsity wins",
    )
    tv: float = Field(
        1e-4,
        ge=0.0,
        description="ard_lora: weight of the total-variation term: sum of |g_t - g_(t-1)| between consecutive "
        "optimizer steps (stable rank changes over training; g_(t-1) held fixed)",
    )
    gate_lr: float = Field(
        0.1,
        gt=0.0,
        description="ard_lora: learning rate of the rank gates (AdamW, no weight decay); a gate starts every round "
        "at 1 and must be able to reach gate_threshold within one round's local steps",
    )
    gate_threshold: float = Field(
        0.5,
        ge=0.0,
        lt=1.0,
        description="ard_lora: after local training the gates are folded into lora_B (B <- B diag(g)) and the "
        "components whose gate is below this are dropped (at least one kept): the client sends its effective-rank "
        "adapter; 0 = never drop",
    )

    @property
    def sends_lower_ranks(self) -> bool:
        return self.gate_threshold > 0
