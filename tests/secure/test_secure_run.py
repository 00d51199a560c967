"""A whole run with secure aggregation on the local engine equals the plain run within quantisation error."""

from __future__ import annotations

import json

from safetensors.torch import load_file

from fedhello.config import config_from_dict
from fedhello.engines import ENGINES


def secure_tree(tiny_config, enabled: bool) -> dict:
    """3 clients, every one sampled, 2 rounds: one trains 2 layers, two train all 4 (every uploaded tensor has at
    least 2 uploaders, but their sets differ from layer to layer)."""
    tree = tiny_config.model_dump(mode="json")
    tree["federation"].update({"num_clients": 3, "clients_per_round": 3, "rounds": 2})
    tree["tiers"] = [{"share": "1/3", "layers": 2}, {"share": "2/3", "layers": 4}]
    tree["strategy"] = {"name": "gd"}
    tree["aggregation"] = {"weighting": "uniform"}
    tree["output"]["plot"] = False
    tree["secure"] = {"enabled": enabled}
    return tree


def adapter(run_dir):
    (path,) = (run_dir / "adapter").glob("*.safetensors")
    return load_file(str(path))


def test_local_secure_run_equals_plain_run(tiny_config, tmp_path):
    plain = config_from_dict(secure_tree(tiny_config, False))
    secure = config_from_dict(secure_tree(tiny_config, True))
    ENGINES.get("local")().run(plain, tmp_path / "plain", show_progress=False)
    ENGINES.get("local")().run(secure, tmp_path / "secure", show_progress=False)
    ours, theirs = adapter(tmp_path / "plain"), adapter(tmp_path / "secure")
    # per round the mean of each entry moves by < 1 quantisation step (2.3e-10 here); float32 storage dominates
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    records = [json.loads(line) for line in (tmp_path / "secure" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert len(record["clients"]) == 3 and record["failed_clients"] == [] and not record["skipped"]
        assert all(c["secure_bytes_up"] > 0 and c["secure_bytes_down"] > 0 for c in record["clients"])
        assert record["bytes_up"] == 0  # no plaintext tensor reached the server


def test_secure_aggregation_with_client_side_privacy_equals_the_plain_private_run(tiny_config, tmp_path):
    """Differential privacy's client mode on top of secure aggregation: the clients clip, the server noises the
    sums it is shown; the same noise (seeded by the released round) as when the server sees the clipped updates."""
    privacy = {"mode": "client", "noise_multiplier": 0.5, "clip_norm": 0.05}
    runs = {}
    for enabled in (False, True):
        tree = {**secure_tree(tiny_config, enabled), "privacy": privacy}
        run_dir = tmp_path / ("secure" if enabled else "plain")
        runs[enabled] = ENGINES.get("local")().run(config_from_dict(tree), run_dir, show_progress=False)
    ours, theirs = adapter(tmp_path / "plain"), adapter(tmp_path / "secure")
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    assert runs[True]["epsilon"] == runs[False]["epsilon"] > 0
