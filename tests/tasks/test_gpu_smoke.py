"""scripts/gpu-smoke.sh in its tiny CPU mode: offline, with every random/synthetic fallback and its warning."""

import os
import re
import subprocess
from pathlib import Path


def test_gpu_smoke_script_tiny_mode_runs_offline(tmp_path):
    env = {**os.environ, "SMOKE_TINY": "1", "SMOKE_OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    for variable in ("VIT_MODEL", "CIFAR100_DATA", "LM_MODEL", "DOLLY_DATA"):
        env.pop(variable, None)
    proc = subprocess.run(
        ["bash", "scripts/gpu-smoke.sh"], capture_output=True, text=True, env=env, timeout=600, cwd=Path.cwd()
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for variable in ("VIT_MODEL", "CIFAR100_DATA", "LM_MODEL", "DOLLY_DATA"):
        assert f"WARNING: {variable} not set" in out
    assert "ViT CIFAR-100" in out and "causal LM on Dolly" in out and "smoke run finished" in out
    # a round table and a per-tier table with measured peak memory for both jobs
    assert len(re.findall(r"^\s+2\s+[\d.]+\s+[\d.]+\s+\d+\s+[\d.]+ \(FIM refresh\)", out, flags=re.M)) == 2
    tier_rows = re.findall(r"^\s+\d\s+\d+\s+\d+\s+[\d.]+\s+[\d.]+\s+([\d.]+)$", out, flags=re.M)
    # peak training memory per tier was measured: resident-set growth may be 0 for a tier, never for all
    assert len(tier_rows) >= 3 and max(float(v) for v in tier_rows) > 0, tier_rows
    assert len(list(tmp_path.glob("vit-cifar100-*/metrics.jsonl"))) == 1
    assert len(list(tmp_path.glob("lm-dolly-*/metrics.jsonl"))) == 1
