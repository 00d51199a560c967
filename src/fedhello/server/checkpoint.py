"""The checkpoint format: what `RUN_DIR/checkpoint/` holds and how it is written and read back. When a run
checkpoints and how it resumes from one is `fedhello.server.resume`.

A checkpoint is two files:
  adapter-<round>.safetensors  the global adapter state, the torch/numpy RNG states and the tensors of the
                               aggregator's state (e.g. a server optimizer's moments), raw and at their dtype
  state.json                   round counter, allocator and aggregator state (each tensor of the aggregator's
                               replaced by a reference into the safetensors file), tier assignment, config,
                               python RNG state, and the byte length of every run-folder log at that round

Both are written atomically (`fedhello.rundir.write_atomic`: a temporary file, flushed to disk, renamed);
`state.json` is written last and names its adapter file, so it is the commit point: a crash at any instant
leaves either the old or the new checkpoint, never a mix. Only safetensors and JSON are read back -- never
pickle.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from fedhello.config import RunConfig
from fedhello.errors import FedHelloError
from fedhello.rundir import CHECKPOINT_DIR, log_sizes, write_atomic

STATE_FILE = "state.json"
FORMAT_VERSION = 1
_ADAPTER, _RNG, _AGGREGATOR = "adapter/", "rng/", "aggregator/"
_TENSOR = "$tensor"  # in state.json, {"$tensor": key}: a tensor of the aggregator's state, stored under that key


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


def _split_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:  # noqa: ANN401 - a state tree
    """`value` with every tensor moved into `tensors` (numbered keys) and replaced by a reference to it."""
    if isinstance(value, torch.Tensor):
        key = f"{_AGGREGATOR}{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous().clone()  # clone: safetensors refuses shared storage
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {str(k): _split_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_tensors(v, tensors) for v in value]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:  # noqa: ANN401 - a state tree
    """Undo `_split_tensors`; a reference to a tensor the file lacks is a `KeyError`."""
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


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
    aggregator_state = _split_tensors(aggregator_state, tensors)
    write_atomic(folder / adapter_name, safetensors_bytes(tensors, metadata={"round": str(round_num)}))

    state = {
        "format": FORMAT_VERSION,
        "round": round_num,
        "adapter_file": adapter_name,
        "allocator": _jsonable(allocator_state),
        "aggregator": _jsonable(aggregator_state),
        "client_tiers": list(client_tiers),
        "config": config.model_dump(mode="json"),
        "log_sizes": log_sizes(run_dir),
        "rng": rng_meta,
    }
    write_atomic(folder / STATE_FILE, json.dumps(state))
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
    """Whether `run_dir` holds a (committed) checkpoint."""
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
    try:
        aggregator_state = _join_tensors(state.get("aggregator"), tensors)
    except KeyError as err:
        raise _unreadable(adapter_path, f"aggregator tensor {err} missing") from None
    return Checkpoint(
        round=state["round"],
        global_state=global_state,
        allocator_state=state["allocator"],
        aggregator_state=aggregator_state,
        client_tiers=list(state["client_tiers"]),
        config=state["config"],
        log_sizes={str(k): int(v) for k, v in state["log_sizes"].items()},
        rng=state["rng"],
        rng_tensors=rng_tensors,
    )
