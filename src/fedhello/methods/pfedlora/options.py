"""pFedLoRA's options (`strategy: {name: pfedlora, ...}`)."""

from __future__ import annotations

from pydantic import Field

from fedhello.config import StrategyConfig


class PFedLoRAOptions(StrategyConfig):
    """The steps of each phase of a client's iterative local-global training."""

    personal_steps: int | None = Field(
        None,
        ge=1,
        description="pfedlora: optimizer steps of the first phase (the personal head, shared LoRA frozen); None = "
        "train:'s own (local_epochs, max_steps)",
    )
    shared_steps: int | None = Field(
        None,
        ge=1,
        description="pfedlora: optimizer steps of the second phase (the shared LoRA, personal head frozen); None = "
        "train:'s own (local_epochs, max_steps)",
    )
