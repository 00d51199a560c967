"""pFedLoRA's client side: two optimisation phases, the personal part first (the shared adapter frozen), then the
shared adapter (the personal part frozen)."""

from __future__ import annotations

from fedhello.models.layers import HEAD
from fedhello.plan import Plan
from fedhello.training.hooks import ClientHook


class PFedLoRAClient(ClientHook):
    """The paper's iterative local-global training on one foundation model (docs/compare.md, pFedLoRA): phase 1
    trains the client's personal head with the received global LoRA frozen (fits the client's data), phase 2 the
    LoRA with the head frozen (takes the personal knowledge into the shared adapter, which alone is sent). Each
    phase is a fresh AdamW; the steps of each are the options' (`PFedLoRAOptions`)."""

    def phases(self, plan: Plan, names: list[str]) -> list[tuple[list[str], int | None]]:
        personal = [n for n in names if self.layout[n] == HEAD]
        shared = [n for n in names if self.layout[n] != HEAD]
        return [
            phase
            for phase in ((personal, self.options.personal_steps), (shared, self.options.shared_steps))
            if phase[0]
        ]
