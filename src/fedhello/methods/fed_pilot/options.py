"""Fed-pilot's options (`strategy: {name: fedpilot, ...}`)."""

from pydantic import Field

from fedhello.allocation.importance import ImportanceSchedule


class FedPilotOptions(ImportanceSchedule):
    """Layer values from gradient norms: the server's, refreshed on the `fim_warmup` / `fim_every` schedule, mixed
    with each client's own."""

    value_local_weight: float = Field(
        0.5, ge=0.0, le=1.0, description="fedpilot: weight of the client's own gradient norms in a layer's value"
    )
    value_decay: float = Field(
        0.5, ge=0.0, lt=1.0, description="fedpilot: moving-average decay of a client's reported gradient norms"
    )
