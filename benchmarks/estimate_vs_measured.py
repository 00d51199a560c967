"""The dry run's analytic memory estimate vs measurement: base weights and training peaks per quantization.

The model is the config's causal LM architecture (a hub name of fedhello's table of known architectures,
e.g. meta-llama/Llama-3.2-1B, or a local folder) with *random* weights, written to a temporary folder in
the checkpoint's dtype and loaded through the client's path (bitsandbytes quantization, k-bit preparation,
LoRA, per-block non-reentrant recomputation as the trainer switches it), so nothing is downloaded. Batches
are random tokens at full length (batch_size x max_length, the estimate's assumption). Peak = training memory
above the loaded model (`measure_layers`, after one warm-up measurement), weights = `quantize.weights_mb` before
LoRA.

    OMP_NUM_THREADS=1 python benchmarks/estimate_vs_measured.py --tiny             # CPU, ~40 s per variant
    python benchmarks/estimate_vs_measured.py --tiny --set train.precision=bf16 --quantizations none nf4
    python benchmarks/estimate_vs_measured.py --config configs/paper/llama-1b-qlora.yaml \\
        --set train.device=cuda --quantizations nf4 none                          # the LLM preset, a GPU
"""

from __future__ import annotations

import gc
import tempfile
from pathlib import Path

import torch
from _common import footer, header, parser
from transformers import AutoModelForCausalLM

from fedhello.config import load_config
from fedhello.models import quantize
from fedhello.models.architectures import architecture
from fedhello.models.build import apply_lora, select_device
from fedhello.models.layers import trainable_layout
from fedhello.models.precision import autocast
from fedhello.resources.cost import CostModel
from fedhello.resources.estimate import estimate, model_shape
from fedhello.resources.measure import measure_layers
from fedhello.resources.memory import meter_for
from fedhello.runtime import quiet_libraries

# the CPU model of docs/benchmarks.md: a GPT-2-style decoder, 6 x 256 wide, MiniLM vocabulary (30,522)
TINY = [
    "lora.target_modules=[c_attn]",
    "lora.r=8",
    "lora.dropout=0.1",
    "train.batch_size=8",
    "train.effective_batch_size=null",
    "train.grad_accum=1",
    "model.max_length=128",
    "train.device=cpu",
    "train.precision=fp32",
    "train.gradient_checkpointing=false",
    "tiers=[{share: 1, layers: 6}]",
]


def random_checkpoint(name: str, folder: Path) -> Path:
    """The architecture of `name` with random weights in its checkpoint dtype, saved like a hub checkpoint."""
    arch, _ = architecture(name)
    dtype = getattr(arch, "dtype", None) or torch.float32
    model = AutoModelForCausalLM.from_config(arch, dtype=dtype)
    model.save_pretrained(folder)
    del model
    return folder


def main() -> None:
    p = parser(__doc__)
    p.set_defaults(config="configs/paper/dolly.yaml")
    p.add_argument("--tiny", action="store_true", help="the 6-layer GPT-2-style CPU model of docs/benchmarks.md")
    p.add_argument("--quantizations", nargs="+", default=["none"], choices=list(quantize.QUANTIZATIONS))
    p.add_argument("--steps", type=int, default=1, help="steps per measurement after one warm-up step")
    args = p.parse_args()
    header("analytic memory estimate vs measurement")
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(args.overrides)
        if args.tiny:
            from fedhello.testing.checkpoints import gpt2_checkpoint

            path = gpt2_checkpoint(Path(tmp) / "gpt2", hidden_size=256, layers=6, heads=4, positions=256)
            overrides = [f"model.name_or_path={path}", *TINY, *overrides]
        config = load_config(args.config, ["task=causal_lm", *overrides])
        shape = model_shape(config)
        if args.tiny:
            folder = Path(config.model.name_or_path)
        else:
            folder = random_checkpoint(config.model.name_or_path, Path(tmp) / "model")
        device = select_device(config.train.device)
        n, train = shape.num_layers, config.train
        print(
            f"model {config.model.name_or_path} ({n} layers, random weights), batch {train.batch_size} x "
            f"{config.model.max_length} tokens, {train.precision}, checkpointing {train.gradient_checkpointing}, "
            f"device {device}, memory: {meter_for(device).method}"
        )
        g = torch.Generator().manual_seed(0)
        vocab = int(shape.arch.vocab_size)
        batches = []
        for _ in range(2):
            ids = torch.randint(5, vocab, (train.batch_size, config.model.max_length), generator=g)
            batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})

        def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            with autocast(device, train.precision):
                return model(**batch).loss

        sets = sorted({(n - 1,), tuple(range(n - n // 2, n)), (0,), (0, n - 1), tuple(range(n))}, key=len)
        for q in args.quantizations:
            est = estimate(shape, config, q)
            kwargs = quantize.quantization_kwargs(config, q, device)
            base = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            if q == "none":
                base = base.to(device)
            base = quantize.prepare(base, q, train.precision)
            weights = quantize.weights_mb(base)
            model = apply_lora(base, config)
            # train.gradient_checkpointing: every block backward traverses recomputes, as the trainer does it
            recompute = n if train.gradient_checkpointing else 0
            layout = trainable_layout(model.named_parameters())
            measure_layers(model, loss_fn, layout, batches, range(n), steps=0, warmup=1)  # one-time buffers
            print(f"\n{q}: weights measured {weights:,.1f} MiB, estimated {est.weights_mb:,.1f} MiB")
            print(f"  {'layers':<24}{'measured MiB':>13}{'estimated MiB':>15}{'est/meas':>9}")
            samples = []
            for layers in sets:
                m = measure_layers(
                    model, loss_fn, layout, batches, layers, steps=args.steps, warmup=1, recompute=recompute
                )
                predicted = est.training.predict(layers, n)
                samples.append((layers, m.peak_mb or 0.0))
                label = f"{layers[0]}-{layers[-1]}" if len(layers) > 2 else " ".join(map(str, layers))
                print(f"  {label:<24}{m.peak_mb or 0:>13,.1f}{predicted:>15,.1f}{predicted / (m.peak_mb or 1):>9.3f}")
            print(f"  measured fit : {CostModel.fit(samples, n).describe('MiB')}")
            print(f"  estimate     : {est.training.describe('MiB')}")
            del model, base
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    footer()


if __name__ == "__main__":
    main()
