"""GPU smoke run (called by scripts/gpu-smoke.sh): a few rounds of the paper's ViT CIFAR-100 config on a 5 %
subset and a few rounds of a causal LM on Dolly, printing round times and peak memory per tier.

Without hub access it needs local copies (env vars below); anything missing is replaced by randomly
initialised weights / synthetic data in the same schema, with a loud warning: such numbers measure speed and
memory only, never quality.

  VIT_MODEL      local folder of google/vit-base-patch16-224-in21k (or any ViT/DeiT classification checkpoint)
  CIFAR100_DATA  local copy of uoft-cs/cifar100 (save_to_disk folder, or parquet/json file)
  LM_MODEL       local folder of a causal LM (GPT-2, LLaMA, ...); LM_TARGETS: LoRA modules (default by family)
  DOLLY_DATA     local databricks-dolly-15k (the .jsonl file or a save_to_disk folder)
  SMOKE_ROUNDS   rounds per job (default 3); SMOKE_OUT: output folder (default runs/gpu-smoke)
  SMOKE_JOBS     which jobs to run: vit,lm (default both); SMOKE_PRECISION: fp32, bf16 or fp16 (default: config's)
  SMOKE_TINY=1   tiny models and data (CPU, seconds): checks the script itself
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = os.environ.get("SMOKE_TINY") == "1"
ROUNDS = int(os.environ.get("SMOKE_ROUNDS", "2" if TINY else "3"))
OUT = Path(os.environ.get("SMOKE_OUT", str(ROOT / "runs" / "gpu-smoke")))
JOBS = set(os.environ.get("SMOKE_JOBS", "vit,lm").split(","))
PRECISION = os.environ.get("SMOKE_PRECISION")
STAMP = time.strftime("%Y%m%d-%H%M%S")


def warn(message: str) -> None:
    bar = "!" * 100
    print(f"\n{bar}\n!! WARNING: {message}\n{bar}\n", flush=True)


def local_path(variable: str) -> str | None:
    value = os.environ.get(variable)
    if value and not Path(value).exists():
        sys.exit(f"error: {variable}={value} does not exist")
    return value or None


def vit_inputs(work: Path) -> tuple[str, str, list[str]]:
    from fedhello.testing.checkpoints import vit_checkpoint
    from fedhello.testing.datasets import cifar100_like

    overrides: list[str] = []
    model = local_path("VIT_MODEL")
    if model is None:
        warn(
            "VIT_MODEL not set: using a RANDOMLY INITIALISED ViT"
            + (" (tiny)" if TINY else "-B/16")
            + ", no pretraining"
        )
        kwargs = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "layers": 4, "heads": 2} if TINY else {}
        model = str(vit_checkpoint(work / "vit-random", num_labels=100, **kwargs))
    data = local_path("CIFAR100_DATA")
    if data is None:
        warn("CIFAR100_DATA not set: using SYNTHETIC images in the cifar100 schema")
        data = str(work / "cifar100-synthetic")
        cifar100_like(num_train=400 if TINY else 2600, num_test=100 if TINY else 500).save_to_disk(data)
    return model, data, overrides


def lm_inputs(work: Path) -> tuple[str, str, list[str]]:
    import re

    from datasets import Dataset, load_from_disk
    from transformers import AutoConfig

    from fedhello.tasks.causal_lm import render_prompt
    from fedhello.testing.checkpoints import gpt2_checkpoint
    from fedhello.testing.datasets import dolly_like

    data = local_path("DOLLY_DATA")
    if data is None:
        warn("DOLLY_DATA not set: using SYNTHETIC instructions in the databricks-dolly-15k schema")
        data = str(work / "dolly-synthetic.jsonl")
        dolly_like(240 if TINY else 1600).to_json(data)
    model = local_path("LM_MODEL")
    if model is None:
        warn("LM_MODEL not set: using a RANDOMLY INITIALISED GPT-2-style model" + (" (tiny)" if TINY else " (124M)"))
        # a word-level tokenizer over the data and the prompt template (no tokenizer download needed);
        # full size keeps GPT-2's 50,257-token embedding so memory and speed are realistic
        rows = load_from_disk(data) if Path(data).is_dir() else Dataset.from_json(data)
        text = " ".join(" ".join(str(v) for v in r.values()) for r in rows.select(range(min(len(rows), 3000))))
        words = re.findall(r"\w+|[^\w\s]", text + render_prompt("x", "y"))
        size = {"hidden_size": 32, "layers": 4, "heads": 2, "positions": 256} if TINY else {}
        size = size or {"hidden_size": 768, "layers": 12, "heads": 12, "positions": 1024, "vocab_size": 50257}
        model = str(gpt2_checkpoint(work / "gpt2-random", words=words, **size))
    arch = AutoConfig.from_pretrained(model, local_files_only=True)
    layers = getattr(arch, "num_hidden_layers", None) or arch.n_layer
    default_targets = "c_attn" if arch.model_type == "gpt2" else "q_proj,v_proj"
    targets = os.environ.get("LM_TARGETS", default_targets).split(",")
    budgets = sorted({max(1, layers // 2), max(1, (3 * layers) // 4), layers})
    tiers = "[" + ", ".join(f"{{share: 1/{len(budgets)}, layers: {k}}}" for k in budgets) + "]"
    return model, data, [f"lora.target_modules=[{','.join(targets)}]", f"tiers={tiers}"]


def job_overrides(model: str, data: str, run_dir: Path) -> list[str]:
    from fedhello.config import TrainConfig

    out = [
        f"model.name_or_path={model}",
        f"data.path={data}",
        f"federation.rounds={ROUNDS}",
        f"federation.eval_every={ROUNDS}",
        "strategy.fim_warmup=1",
        "strategy.fim_every=2",
        "train.device=auto",
        f"output.dir={run_dir}",
        "output.plot=false",
        "output.save_adapter=false",
    ]
    if "record_resources" in TrainConfig.model_fields:
        out.append("train.record_resources=true")
    if PRECISION:
        out.append(f"train.precision={PRECISION}")
    return out


def run_job(title: str, config_file: str, overrides: list[str], run_dir: Path) -> None:
    import torch

    from fedhello.config import load_config
    from fedhello.engines import ENGINES
    from fedhello.rundir import read_metrics

    config = load_config(ROOT / config_file, overrides)
    if not torch.cuda.is_available():
        config.train.precision = "fp32"  # CPU autocast only slows the tiny check down
    print(f"== {title}: {config.model.name_or_path}", flush=True)
    print(
        f"   {config.federation.num_clients} clients, {config.federation.clients_per_round} per round, "
        f"{config.federation.rounds} rounds, tiers {[t.layers for t in config.tiers]} layers, "
        f"batch {config.train.batch_size} x {config.train.grad_accum}, {config.train.precision}",
        flush=True,
    )
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False)
    total = time.perf_counter() - started
    records = read_metrics(run_dir)
    print("   round  wall_s  train_s  clients  metric")
    for r in records:
        metric = "" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        refresh = " (FIM refresh)" if r.get("importance_refresh") else ""
        print(
            f"   {r['round']:>5}  {r['wall_seconds']:6.2f}  {r['train_seconds']:7.2f}  "
            f"{len(r['clients']):>7}  {metric}{refresh}"
        )
    tiers: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        for c in r["clients"]:
            tiers[c["tier"]].append(c)
    print("   tier  layers  client-rounds  mean_client_s  median_step_s  peak_train_mem_MiB (above the model)")
    for tier in sorted(tiers):
        clients = tiers[tier]
        peaks = [c["peak_mem_mb"] for c in clients if c.get("peak_mem_mb") is not None]
        steps = [c["step_seconds"] for c in clients if c.get("step_seconds") is not None]
        print(
            f"   {tier:>4}  {config.tiers[tier].layers:>6}  {len(clients):>13}  "
            f"{sum(c['seconds'] for c in clients) / len(clients):13.3f}  "
            f"{(sorted(steps)[len(steps) // 2] if steps else float('nan')):13.4f}  "
            f"{(max(peaks) if peaks else float('nan')):.1f}"
        )
    if torch.cuda.is_available():
        print(f"   process peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    print(f"   best metric {summary['best_accuracy']:.4f}; job time {total:.1f} s; run folder {run_dir}\n", flush=True)


def main() -> None:
    import torch

    from fedhello.runtime import quiet_libraries

    quiet_libraries()
    work = OUT / "inputs"
    work.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA device)"
    print(f"fedhello GPU smoke: device {device}, torch {torch.__version__}, tiny={TINY}, rounds={ROUNDS}", flush=True)
    if not torch.cuda.is_available() and not TINY:
        warn("no CUDA device: this full-size smoke run will be very slow on CPU (use SMOKE_TINY=1)")

    started = time.perf_counter()
    if "vit" in JOBS:
        run_vit(work)
    if "lm" in JOBS:
        run_lm(work)
    print(f"smoke run finished in {time.perf_counter() - started:.1f} s", flush=True)


def run_vit(work: Path) -> None:
    model, data, extra = vit_inputs(work)
    vit = job_overrides(model, data, OUT) + extra
    # 5 % of CIFAR-100 (2,500 training and 500 test images) over 20 IID clients, so that every client
    # trains one full batch of ~125 images and peak memory is comparable between tiers
    vit += ["data.max_train_samples=2500", "data.max_test_samples=500"]
    vit += ["federation.num_clients=20", "federation.clients_per_round=10"]
    if TINY:
        vit += [
            "tiers=[{share: 1/3, layers: 1}, {share: 1/3, layers: 2}, {share: 1/3, layers: 4}]",
            "federation.num_clients=6",
            "federation.clients_per_round=3",
            "train.batch_size=16",
            "data.proxy_size=8",
            "lora.r=4",
        ]
    run_job(
        "ViT CIFAR-100 (configs/paper/cifar100-iid.yaml, 5 % subset)",
        "configs/paper/cifar100-iid.yaml",
        vit,
        OUT / f"vit-cifar100-{STAMP}",
    )


def run_lm(work: Path) -> None:
    model, data, extra = lm_inputs(work)
    lm = job_overrides(model, data, OUT) + extra
    lm += [
        "federation.num_clients=16",
        "federation.clients_per_round=4",
        "model.max_length=256",
        "model.max_new_tokens=32",
        "data.max_test_samples=64",
        "data.max_generate_samples=16",
        "data.test_size=0.1",
    ]
    if TINY:
        lm += [
            "federation.num_clients=8",
            "federation.clients_per_round=2",
            "model.max_length=64",
            "model.max_new_tokens=6",
            "data.max_generate_samples=4",
            "train.batch_size=8",
            "train.effective_batch_size=16",
            "data.proxy_size=8",
            "train.gradient_checkpointing=false",
        ]
    run_job("causal LM on Dolly (configs/paper/dolly.yaml)", "configs/paper/dolly.yaml", lm, OUT / f"lm-dolly-{STAMP}")


if __name__ == "__main__":
    main()
