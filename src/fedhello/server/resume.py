"""Resuming a run: the config a resumed run uses, the rules that decide whether it may continue, and what
one round's checkpoint saves and puts back. The checkpoint files are `fedhello.server.checkpoint`.

Exact resume needs little more than the checkpoint: every round decision derives from
`fedhello.seeding.round_rng(seed, round, stream)` and every client's training from `client_seed(seed, round,
client)`, so the global adapter and the allocator (and aggregator) state at round N fully determine rounds
N+1, N+2, ...; the RNG states are restored anyway so code that draws from the global generators stays
reproducible. The run folder's logs are cut back to their length at the checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedhello.config import RunConfig, flatten, load_config
from fedhello.errors import ConfigError, FedHelloError
from fedhello.rundir import CONFIG_FILE, truncate_logs
from fedhello.server.checkpoint import Checkpoint, has_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from fedhello.server.coordinator import Coordinator
from fedhello.server.federation import Federation
from fedhello.training.store import ClientStore

# Fields that may change between the interrupted run and its resumption without changing any result:
# more (or fewer, but not below the checkpoint) rounds, how often to evaluate/checkpoint, output options.
HARMLESS_FIELDS = ("name", "federation.rounds", "federation.eval_every", "checkpoint.", "output.")


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Fields (dotted) whose values differ, except the harmless ones, as (field, saved, current)."""
    old, new = flatten(saved), flatten(current)
    out = []
    for field in sorted(set(old) | set(new)):
        if any(field == h or (h.endswith(".") and field.startswith(h)) for h in HARMLESS_FIELDS):
            continue
        if old.get(field, "<absent>") != new.get(field, "<absent>"):
            out.append((field, old.get(field, "<absent>"), new.get(field, "<absent>")))
    return out


def check_resumable(checkpoint: Checkpoint, config: RunConfig, client_tiers: list[int]) -> None:
    """Refuse (one line) to resume with a config or a federation that would not continue the same run."""
    differences = config_differences(checkpoint.config, config.model_dump(mode="json"))
    if differences:
        field, saved, now = differences[0]
        more = f" and {len(differences) - 1} more field(s)" if len(differences) > 1 else ""
        raise ConfigError(
            field,
            f"is {now!r} but the checkpoint was written with {saved!r}{more}; a resumed run must use the same config",
            "resume without a config (the run folder's config.yaml is used) or start a new run",
        )
    if config.federation.rounds < checkpoint.round:
        raise ConfigError(
            "federation.rounds",
            f"{config.federation.rounds} is below the checkpoint's round {checkpoint.round}",
            f"use at least {checkpoint.round}",
        )
    if list(client_tiers) != list(checkpoint.client_tiers):
        raise FedHelloError(
            "option '--resume': the client tier assignment differs from the checkpoint's "
            "(fix: resume with the fedhello version that wrote the run)"
        )


def resume_config(run_dir: Path, config_path: Path | None, overrides: list[str] | None, out: Path | None) -> RunConfig:
    """`fedhello run --resume RUN_DIR`: the run folder's own config.yaml (plus `--set` overrides of harmless
    fields, e.g. more rounds) or the given file, refused early when it differs from the checkpoint's or
    the checkpoint cannot be read."""
    saved = run_dir / CONFIG_FILE
    if not run_dir.is_dir() or not saved.is_file():
        raise FedHelloError(
            f"option '--resume': '{run_dir}' is not a run folder (no {CONFIG_FILE}) (fix: pass the folder a run wrote)"
        )
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise FedHelloError("option '--out': a resumed run continues in its own folder (fix: drop --out)")
    config = load_config(config_path if config_path is not None else saved, overrides, saved=config_path is None)
    if has_checkpoint(run_dir):
        checkpoint = load_checkpoint(run_dir)
        check_resumable(checkpoint, config, checkpoint.client_tiers)
    return config


def resumed_round(run_dir: Path) -> int:
    """The last round the run folder's checkpoint holds, which a resumed run continues after (0: none yet)."""
    return load_checkpoint(run_dir).round if has_checkpoint(run_dir) else 0


def client_store(root: str | Path, run_dir: Path, resume: bool) -> ClientStore:
    """The store of the personalised clients' state at `root`. A resumed run first discards the versions of the
    rounds after its checkpoint: its crashed rounds wrote them, and they run again."""
    store = ClientStore(root)
    if resume:
        store.discard_after(resumed_round(run_dir))
    return store


def resume_message(run_dir: Path, config: RunConfig) -> str:
    """What `fedhello run --resume` says before it starts: which round it continues from, of how many."""
    done, rounds = resumed_round(run_dir), config.federation.rounds
    if done >= rounds:
        return (
            f"{run_dir} has finished its {rounds} rounds: writing its results again "
            "(to train more: --set federation.rounds=N)"
        )
    return f"resuming {run_dir} from round {done + 1} of {rounds}"


def save_round(run_dir: Path, round_num: int, federation: Federation, coordinator: Coordinator) -> None:
    """Checkpoint the state after round `round_num`: global adapter, allocator and aggregator state,
    tier assignment, config, RNG states and the length of every run-folder log."""
    save_checkpoint(
        run_dir,
        round_num,
        federation.config,
        coordinator.global_state,
        coordinator.allocator.state_dict(),
        federation.client_tiers,
        coordinator.aggregator.state_dict(),
    )


def resume_run(federation: Federation, coordinator: Coordinator, run_dir: Path) -> int:
    """Load the run folder's checkpoint into the coordinator and cut the logs back to it; returns the round
    to continue after (0 when the run was interrupted before its first checkpoint)."""
    if not has_checkpoint(run_dir):
        truncate_logs(run_dir, {})
        return 0
    checkpoint = load_checkpoint(run_dir)
    check_resumable(checkpoint, federation.config, federation.client_tiers)
    if set(checkpoint.global_state) != set(coordinator.global_state):
        raise FedHelloError(
            "option '--resume': the checkpoint's adapter tensors do not match this model "
            "(fix: resume with the model and LoRA settings of the run)"
        )
    coordinator.global_state = {k: v.to(coordinator.global_state[k].dtype) for k, v in checkpoint.global_state.items()}
    coordinator.allocator.load_state_dict(checkpoint.allocator_state)
    if checkpoint.aggregator_state is not None:
        coordinator.aggregator.load_state_dict(checkpoint.aggregator_state)
    truncate_logs(run_dir, checkpoint.log_sizes)
    restore_rng(checkpoint)
    return checkpoint.round
