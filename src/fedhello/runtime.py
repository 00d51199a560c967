"""Process set-up shared by the command line, the Flower apps, the benchmarks and the scripts."""

from __future__ import annotations

import logging
import os
import warnings

# Warnings a fedhello user cannot act on, as `warnings.filterwarnings` takes them (action "ignore"):
# (message regex, category, module regex). peft's notes on how it wraps a model (e.g. GPT-2's Conv1D gets
# fan_in_fan_out), flwr-datasets' notes on how a partition came out (partition.json and the report show it), and
# TorchScript's deprecation notices, which Flower's simulation turns on for every process that imports it
# (`warnings.filterwarnings("once", category=DeprecationWarning)`) and which Ray's actors then print.
NOISE: tuple[tuple[str, type[Warning], str], ...] = (
    ("", UserWarning, r"peft(\.|$)"),
    ("", UserWarning, r"flwr_datasets(\.|$)"),
    (r"`torch\.jit", DeprecationWarning, ""),
    (r"TorchScript", DeprecationWarning, ""),
    ("", FutureWarning, ""),
)
# The TorchScript filter in the -W syntax, for processes started from this one (Ray's workers, Flower's
# processes) before they run any fedhello code: PYTHONWARNINGS takes a literal message start.
CHILD_WARNINGS = "ignore:`torch.jit:DeprecationWarning"


def quiet_libraries() -> None:
    """fedhello's own progress bar and run folder are enough: silence per-split `datasets` bars, model load
    reports, deprecation notices from inside transformers/peft/torch, peft's and flwr-datasets' notes (`NOISE`),
    and lm-eval's warnings about being handed a model object rather than a hub name (not actionable for a
    fedhello user). Idempotent; call it again after importing a library that changes the warning filters
    (Flower's simulation does), since the latest filters win."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    # `datasets` logs a read failure before raising it; the exception reaches the CLI and becomes one line
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    for message, category, module in NOISE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    inherited = os.environ.get("PYTHONWARNINGS", "")
    if CHILD_WARNINGS not in inherited.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(part for part in (inherited, CHILD_WARNINGS) if part)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # by name: importing lm_eval costs seconds
