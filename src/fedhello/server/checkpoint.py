"""Resumable checkpoints of a run, written atomically into `RUN_DIR/checkpoint/`.

A checkpoint is two files:
  adapter-<round>.safetensors  the global adapter state plus the torch/numpy RNG states (raw tensors)
  state.json                   round counter, allocator (and aggregator) state, tier assignment, config,
                               python RNG state, and the byte length of every run-folder log at that round

Both are written to a temporary file, flushed to disk and renamed (`os.replace`); `state.json` is renamed
last and names its adapter file, so it is the commit point: a crash at any instant leaves either the old
or the new checkpoint, never a mix. Only safetensors and JSON are read back -- never pickle.

Exact resume needs little more: every round decision derives from `default_rng([seed, round, stream])`
and every client's training from `client_seed(seed, round, client)`, so the global adapter and the
allocator state at round N fully determine rounds N+1, N+2, ...; the RNG states are restored anyway so
code that draws from the global generators stays reproducible.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fedhello.config import RunConfig, flatten
from fedhello.errors import ConfigError, FedHelloError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
LOG_FILES = ("metrics.jsonl", "allocations.csv", "importance.jsonl")
FORMAT_VERSION = 1
# Fields that may change between the interrupted run and its resumption without changing any result:
# more (or fewer, but not below the checkpoint) rounds, how often to evaluate/checkpoint, output options.
HARMLESS_FIELDS = ("name", "federation.rounds", "federation.eval_every", "checkpoint.", "output.")
_ADAPTER, _RNG = "adapter/", "rng/"


@dataclass
class Checkpoint:
    """What `load_checkpoint` read back."""

    round: int
    global_state: dict[str, torch.Tensor]
    allocator_state: dict[str, Any]
    aggregator_state: dict[str, Any] | None
    client_tiers: list[int]
    config: dict[str, Any]
    log_sizes: dict[str, int]
    rng: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]


def _jsonable(value: Any) -> Any:
    """Allocator states may hold numpy or torch values; JSON holds lists and plain numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value


def _fsync_replace(tmp: Path, path: Path) -> None:
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _rng_snapshot() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {f"{_RNG}torch": torch.get_rng_state(), f"{_RNG}numpy": torch.from_numpy(keys.astype(np.int64))}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG}cuda.{i}"] = state
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(internal), "gauss": gauss},
    }
    return tensors, meta


def restore_rng(checkpoint: Checkpoint) -> None:
    """Put the torch, CUDA, numpy and python global generators back where the checkpoint left them."""
    tensors, meta = checkpoint.rng_tensors, checkpoint.rng
    torch.set_rng_state(tensors[f"{_RNG}torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith(f"{_RNG}cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy = meta["numpy"]
    keys = tensors[f"{_RNG}numpy"].numpy().astype(np.uint32)
    np.random.set_state((numpy["name"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    python = meta["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


def save_checkpoint(
    run_dir: Path,
    round_num: int,
    config: RunConfig,
    global_state: dict[str, torch.Tensor],
    allocator_state: dict[str, Any],
    client_tiers: list[int],
    aggregator_state: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint of a completed round `round_num`; returns the path of its state file."""
    folder = run_dir / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rng_tensors, rng_meta = _rng_snapshot()
    adapter_name = f"adapter-{round_num:06d}.safetensors"
    tensors = {f"{_ADAPTER}{k}": v.detach().cpu().contiguous() for k, v in global_state.items()}
    tensors.update({k: v.contiguous() for k, v in rng_tensors.items()})
    tmp = folder / f".{adapter_name}.tmp"
    save_file(tensors, str(tmp), metadata={"round": str(round_num)})
    _fsync_replace(tmp, folder / adapter_name)

    state = {
        "format": FORMAT_VERSION,
        "round": round_num,
        "adapter_file": adapter_name,
        "allocator": _jsonable(allocator_state),
        "aggregator": _jsonable(aggregator_state),
        "client_tiers": list(client_tiers),
        "config": config.model_dump(mode="json"),
        "log_sizes": {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in LOG_FILES},
        "rng": rng_meta,
    }
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state))
    _fsync_replace(tmp, folder / STATE_FILE)
    for old in folder.glob("adapter-*.safetensors"):  # superseded now that state.json names the new one
        if old.name != adapter_name:
            old.unlink(missing_ok=True)
    return folder / STATE_FILE


def _unreadable(path: Path, why: str) -> FedHelloError:
    return FedHelloError(
        f"option '--resume': checkpoint '{path}' is unreadable ({why}) "
        "(fix: restore the checkpoint folder, or delete it to restart the run from round 1)"
    )


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT_DIR / STATE_FILE).exists()


def load_checkpoint(run_dir: Path) -> Checkpoint:
    """Read and check the latest checkpoint of `run_dir`; any damage is a one-line `FedHelloError`."""
    folder = run_dir / CHECKPOINT_DIR
    state_path = folder / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _unreadable(state_path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    required = ("format", "round", "adapter_file", "allocator", "client_tiers", "config", "log_sizes", "rng")
    if not isinstance(state, dict) or any(key not in state for key in required):
        raise _unreadable(state_path, "not a fedhello checkpoint state")
    if state["format"] != FORMAT_VERSION:
        raise _unreadable(state_path, f"format {state['format']}, this version reads {FORMAT_VERSION}")
    if not isinstance(state["round"], int) or state["round"] < 0:
        raise _unreadable(state_path, f"bad round {state['round']!r}")
    adapter_path = folder / str(state["adapter_file"])
    if adapter_path.parent != folder:
        raise _unreadable(state_path, "adapter file outside the checkpoint folder")
    try:
        tensors = load_file(str(adapter_path))
    except (OSError, SafetensorError) as err:
        raise _unreadable(adapter_path, str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    global_state = {k.removeprefix(_ADAPTER): v for k, v in tensors.items() if k.startswith(_ADAPTER)}
    rng_tensors = {k: v for k, v in tensors.items() if k.startswith(_RNG)}
    if not global_state or f"{_RNG}torch" not in rng_tensors or f"{_RNG}numpy" not in rng_tensors:
        raise _unreadable(adapter_path, "adapter or RNG tensors missing")
    return Checkpoint(
        round=state["round"],
        global_state=global_state,
        allocator_state=state["allocator"],
        aggregator_state=state.get("aggregator"),
        client_tiers=list(state["client_tiers"]),
        config=state["config"],
        log_sizes={str(k): int(v) for k, v in state["log_sizes"].items()},
        rng=state["rng"],
        rng_tensors=rng_tensors,
    )


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


def truncate_logs(run_dir: Path, log_sizes: dict[str, int]) -> None:
    """Cut every run-folder log back to its length at the checkpoint, dropping rounds (and any half-written
    line) logged after it, so a resumed run never duplicates a round."""
    for name in LOG_FILES:
        path = run_dir / name
        size = log_sizes.get(name, 0)
        if size == 0:  # nothing of it belongs to the checkpoint (a fresh writer recreates it)
            path.unlink(missing_ok=True)
            continue
        if not path.exists():
            if size:
                raise _unreadable(run_dir / CHECKPOINT_DIR / STATE_FILE, f"{name} is missing from the run folder")
            continue
        if path.stat().st_size < size:
            raise _unreadable(run_dir / CHECKPOINT_DIR / STATE_FILE, f"{name} is shorter than at the checkpoint")
        with path.open("rb+") as handle:
            handle.truncate(size)


def resume_config(run_dir: Path, config_path: Path | None, overrides: list[str] | None, out: Path | None) -> RunConfig:
    """The config to resume `run_dir` with: the run folder's own `config.yaml` (plus `--set` overrides of
    harmless fields, e.g. more rounds) or the given file, refused early when it differs from the
    checkpoint's or the checkpoint cannot be read."""
    from fedhello.config import load_config

    saved = run_dir / "config.yaml"
    if not run_dir.is_dir() or not saved.is_file():
        raise FedHelloError(
            f"option '--resume': '{run_dir}' is not a run folder (no config.yaml) (fix: pass the folder a run wrote)"
        )
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise FedHelloError("option '--out': a resumed run continues in its own folder (fix: drop --out)")
    config = load_config(config_path if config_path is not None else saved, overrides)
    if has_checkpoint(run_dir):
        checkpoint = load_checkpoint(run_dir)
        check_resumable(checkpoint, config, checkpoint.client_tiers)
    return config
