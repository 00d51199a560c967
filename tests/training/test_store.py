"""The per-client store: versions by round, the newest before a round, atomic writes, discarding crashed rounds."""

from __future__ import annotations

import torch

from fedhello.training.store import ClientStore


def test_a_client_starts_from_its_newest_version_before_the_round(tmp_path):
    store = ClientStore(tmp_path)
    assert store.load(3, before_round=1) is None
    store.save(3, 1, {"w": torch.ones(2)})
    store.save(3, 4, {"w": torch.full((2,), 4.0)})
    assert store.versions(3) == [1, 4] and store.versions(5) == []
    assert store.load(3, before_round=1) is None
    assert torch.equal(store.load(3, before_round=4)["w"], torch.ones(2))  # round 4 itself is not "before"
    assert torch.equal(store.load(3, before_round=5)["w"], torch.full((2,), 4.0))
    store.save(3, 4, {"w": torch.zeros(2)})  # retraining a round replaces its version
    assert torch.equal(store.load(3, before_round=9)["w"], torch.zeros(2))
    names = sorted(p.name for p in (tmp_path / "3").iterdir())
    assert names == ["round-1.safetensors", "round-4.safetensors"], "no temporary left"


def test_resuming_discards_the_versions_of_crashed_rounds(tmp_path):
    store = ClientStore(tmp_path)
    for client, round_num in ((0, 1), (0, 3), (1, 2), (1, 4)):
        store.save(client, round_num, {"w": torch.tensor([float(round_num)])})
    store.discard_after(2)
    assert store.versions(0) == [1] and store.versions(1) == [2]
    ClientStore(tmp_path / "absent").discard_after(0)  # nothing stored yet: nothing to do
