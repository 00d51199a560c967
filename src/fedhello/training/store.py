"""Per-client persistent state: what a personalised client keeps and never sends (`Plan.personal`).

A store is a folder that lives where the client lives -- under the run folder for the local and flower-sim
engines (`rundir.files.CLIENTS_DIR`), a node-local folder on flower-deploy (`--node-config state-dir=...`) --
with one folder per client id holding one file per version (safetensors: nothing is unpickled):

    <root>/<client id>/round-<k>.safetensors     the client's personal tensors after it trained in round k

A client training in round r starts from its newest version of a round before r, so a run resumed from the
checkpoint of round k (which trains round k + 1 again) uses each client's state as of round k even when a
later version was written before the crash; retraining round k + 1 overwrites that version with the same
tensors, and the engines whose server holds the store (local, flower-sim) discard the versions after round k when
they resume (`discard_after`). Every older version is kept (a personal part is small: a task head, or one LoRA
factor): pruning could remove the version an older checkpoint needs. Files are written atomically (a temporary
file, then a rename), so a crash leaves either the old or the new version, never half of one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_VERSION = re.compile(r"^round-(\d+)\.safetensors$")


class ClientStore:
    """Versioned per-client tensors under `root` (see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, client_id: int) -> list[int]:
        """The rounds this client has a version of, ascending."""
        folder = self.root / str(client_id)
        if not folder.is_dir():
            return []
        found = (_VERSION.match(path.name) for path in folder.iterdir())
        return sorted(int(match.group(1)) for match in found if match)

    def load(self, client_id: int, before_round: int) -> dict[str, torch.Tensor] | None:
        """The client's newest state written in a round before `before_round`, or None when it has none."""
        earlier = [k for k in self.versions(client_id) if k < before_round]
        if not earlier:
            return None
        return load_file(str(self.root / str(client_id) / f"round-{earlier[-1]}.safetensors"))

    def discard_after(self, round_num: int) -> None:
        """Remove every version of a round after `round_num`: a run resumed from the checkpoint of `round_num`
        must not find state its crashed rounds wrote (a client that trained in a crashed round and is not
        trained again in that round would otherwise start its next round from it)."""
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.is_dir() and folder.name.isdigit():
                for k in self.versions(int(folder.name)):
                    if k > round_num:
                        (folder / f"round-{k}.safetensors").unlink()

    def save(self, client_id: int, round_num: int, tensors: dict[str, torch.Tensor]) -> Path:
        """Write the client's state after round `round_num` (atomically; replaces that round's version)."""
        folder = self.root / str(client_id)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"round-{round_num}.safetensors"
        tmp = folder / f".round-{round_num}.safetensors.{os.getpid()}.tmp"
        save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, str(tmp))
        os.replace(tmp, path)
        return path
