"""FIM-HLA's options (`strategy: {name: fim, ...}`)."""

from pydantic import Field

from fedhello.allocation.importance import ImportanceSchedule


class FisherOptions(ImportanceSchedule):
    """Layers drawn by Fisher importance, re-estimated on the `fim_warmup` / `fim_every` schedule."""

    fim_hold: bool = Field(
        True,
        description="keep the latest FIM probabilities until the next refresh; False = official code "
        "(FIM only in refresh rounds, the pattern otherwise)",
    )
    fim_levels: int = Field(3, gt=0, description="importance levels (official: 3, probabilities 1:2:3)")
