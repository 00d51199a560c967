"""The comparison grid: one run config (with `base:` includes and `--set` overrides) plus a `compare:`
section naming the methods, the partitions and the seeds.

Every cell shares the experiment's data, model, tiers and budgets; a cell only swaps in its partition, its
seed and its method's preset. Partitions, tier assignment and client sampling derive from the seed alone,
so for a given (partition, seed) every method sees the same clients with the same data in every round.
A cell whose folder holds `summary.json` is finished and not re-run (resume after an interruption).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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
    seeds: list[int] = Field(default_factory=lambda: [1], description="one cell per seed; results are mean ± std")
    out: str = Field("runs/compare", description="folder of the grid: one sub-folder per cell plus the results")
    engine: str = Field("local", description="registered engine that runs each cell")


@dataclass(frozen=True)
class Cell:
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
            saved = config_from_dict(yaml.safe_load((self.run_dir / CONFIG_FILE).read_text()) or {})
        except ConfigError:  # written with settings this version no longer has
            return False
        return saved.model_dump(mode="json") == self.config.model_dump(mode="json")


def load_grid(path: str | Path, overrides: list[str] | None = None, out: str | Path | None = None) -> list[Cell]:
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
                cells.append(Cell(label, method, seed, method_config(cell_tree, method), run_dir, spec.engine))
    if not cells:
        raise ConfigError("compare", "the grid is empty", "list at least one method, partition and seed")
    return cells


def run_grid(cells: list[Cell], show_progress: bool = True) -> dict[str, int]:
    """Run every unfinished cell in order with its engine; returns counts of cells run and skipped."""
    from fedhello.engines import ENGINES

    done = sum(cell.done for cell in cells)
    progress = Progress(
        TextColumn("[bold]cells"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not show_progress,
    )
    ran = 0
    with progress:
        bar = progress.add_task("", total=len(cells), completed=done)
        for cell in cells:
            if cell.done:
                continue
            progress.update(bar, description=cell.label)
            if cell.run_dir.exists():  # interrupted or stale: start it over (its logs are appended to)
                shutil.rmtree(cell.run_dir)
            ENGINES.get(cell.engine)().run(cell.config, cell.run_dir, show_progress=False)
            ran += 1
            progress.advance(bar)
    return {"ran": ran, "skipped": done}

