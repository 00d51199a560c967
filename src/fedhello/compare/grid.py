"""The comparison grid: one run config (with `base:` includes and `--set` overrides) plus a `compare:`
section naming the methods, the partitions and the seeds.

Every cell shares the experiment's data, model, tiers and budgets; a cell only swaps in its partition, its
seed and its method's preset. Partitions, tier assignment and client sampling derive from the seed alone,
so for a given (partition, seed) every method sees the same clients with the same data in every round.
A cell whose folder holds `summary.json` written with the same config is finished and not re-run (resume
after an interruption). Running the cells is `fedhello.compare.runner`'s job.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fedhello.config import RunConfig, config_from_dict, parse_override, read_yaml_tree, set_dotted
from fedhello.errors import ConfigError
from fedhello.methods import METHODS, method_config
from fedhello.rundir import CONFIG_FILE, read_summary


class CompareSpec(BaseModel):
    """The `compare:` section of a comparison config."""

    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(description="registered method names (fedhello compare --list shows them)")
    partitions: dict[str, dict[str, Any]] = Field(
        description="label -> partition section, e.g. {iid: {kind: iid}, dir0.5: {kind: dirichlet, alpha: 0.5}}"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [1, 2, 3],
        min_length=1,
        description="one cell per seed; results are mean ± std and differences to the reference are paired by seed",
    )
    reference: str = Field(
        "fedit", description="method of the grid every other method is compared with (paired differences)"
    )
    last_k: int = Field(3, gt=0, description="the last-k column: mean accuracy of the last k evaluated rounds")
    target_half_width: float = Field(
        0.015,
        gt=0.0,
        description="precision wanted of each paired difference (a fraction: 0.015 = ±1.5 points); a wider 95 % "
        "interval is flagged in the table with the number of seeds it would take",
    )
    workers: int = Field(
        0,
        ge=0,
        description="cells run in parallel processes (local engine); 0 = one per CPU core (one on a GPU), "
        "never more than the unfinished cells; 1 = in this process, one after another",
    )
    out: str = Field("runs/compare", description="folder of the grid: one sub-folder per cell plus the results")
    engine: str = Field("local", description="registered engine that runs each cell")


SHARED = "all-partitions"  # folder of the runs of methods that do not depend on the partition


@dataclass(frozen=True)
class Cell:
    """One run of the grid: a method on a partition with a seed, in its own run folder."""

    partition: str
    method: str
    seed: int
    config: RunConfig
    run_dir: Path
    engine: str = "local"

    @property
    def label(self) -> str:
        return f"{self.partition} / {self.method} / seed {self.seed}"

    @property
    def done(self) -> bool:
        """Finished with this very config (a folder left by other settings does not count). The saved config
        is read with today's defaults, so a field added since the cell ran does not make it unfinished."""
        if read_summary(self.run_dir) is None or not (self.run_dir / CONFIG_FILE).is_file():
            return False
        try:
            saved = config_from_dict(read_yaml_tree(self.run_dir / CONFIG_FILE, saved=True))
        except ConfigError:  # written with settings this version no longer has
            return False
        return same_config(saved.model_dump(mode="json"), self.config.model_dump(mode="json"))


def same_config(saved: Any, wanted: dict[str, Any]) -> bool:
    """The saved config.yaml is the wanted config, except for what a run fills in from its budget profile: the
    layer count of a tier that only declares a budget (`layers: null` in the wanted config) and the MiB a
    `memory_fraction` stands for (`memory_mb: null` beside it)."""
    if not isinstance(saved, dict):
        return False
    saved = copy.deepcopy(saved)
    wanted_tiers, saved_tiers = wanted.get("tiers") or [], saved.get("tiers") or []
    if len(wanted_tiers) == len(saved_tiers):
        for want, got in zip(wanted_tiers, saved_tiers, strict=True):
            if isinstance(got, dict) and want.get("layers") is None:
                got["layers"] = None
            if isinstance(got, dict) and want.get("memory_mb") is None and want.get("memory_fraction") is not None:
                got["memory_mb"] = None
    return saved == wanted


@dataclass(frozen=True)
class Grid:
    """A loaded comparison: its settings, its cells (grid order) and its folder."""

    spec: CompareSpec
    cells: list[Cell]
    root: Path


def load_grid(path: str | Path, overrides: list[str] | None = None, out: str | Path | None = None) -> list[Cell]:
    """The validated cells of a comparison config (see `load_compare`)."""
    return load_compare(path, overrides, out).cells


def load_compare(path: str | Path, overrides: list[str] | None = None, out: str | Path | None = None) -> Grid:
    """Read a comparison config and expand it into validated cells (validation happens before any run)."""
    tree = read_yaml_tree(Path(path))
    for text in overrides or []:
        set_dotted(tree, *parse_override(text))
    raw_spec = tree.pop("compare", None)
    if raw_spec is None:
        raise ConfigError("compare", "section missing", "add compare: {methods: [...], partitions: {...}}")
    try:
        spec = CompareSpec.model_validate(raw_spec)
    except ValidationError as err:
        first = err.errors()[0]
        field = "compare." + ".".join(str(p) for p in first["loc"])
        raise ConfigError(field, first["msg"], "see docs/compare.md") from None
    from fedhello.engines import ENGINES

    ENGINES.get(spec.engine, "compare.engine")
    for name in spec.methods:
        METHODS.get(name, "compare.methods")
    if spec.reference not in spec.methods:
        raise ConfigError(
            "compare.reference",
            f"'{spec.reference}' is not one of compare.methods",
            f"add it to compare.methods or set compare.reference to one of {', '.join(spec.methods)}",
        )
    root = Path(out) if out is not None else Path(spec.out)
    cells = []
    for label, partition in spec.partitions.items():
        for method in spec.methods:
            for seed in spec.seeds:
                cell_tree = copy.deepcopy(tree)
                cell_tree["partition"] = copy.deepcopy(partition)
                cell_tree["seed"] = seed
                cell_tree["name"] = f"{label}-{method}-s{seed}"
                run_dir = root / label / method / f"seed{seed}"
                if METHODS.get(method).partition_free:  # one run serves every partition (e.g. centralized)
                    cell_tree["name"] = f"{method}-s{seed}"
                    run_dir = root / SHARED / method / f"seed{seed}"
                cells.append(Cell(label, method, seed, method_config(cell_tree, method), run_dir, spec.engine))
    if not cells:
        raise ConfigError("compare", "the grid is empty", "list at least one method, partition and seed")
    return Grid(spec, cells, root)
