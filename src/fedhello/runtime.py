"""Process set-up shared by the command line, the Flower apps, the benchmarks and the scripts."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
import warnings


class DeferOptionalImports(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Keep libraries fedhello imports from importing slow optional packages that fedhello never uses through
    them. Each of these imports is guarded by its library (`try: ... except ImportError`), and each costs every
    process -- every CLI call, ClientApp and executor -- about a second:

    - `peft.helpers` imports bitsandbytes eagerly whenever it is installed (for one helper fedhello does not
      use), and bitsandbytes' import runs `torch.compile`, which loads TorchInductor;
    - seaborn (imported by `flwr_datasets`' plotting helpers) imports scipy.stats for its kernel density
      estimate whenever scipy is installed, as it is with lm-eval.

    Such an import fails as if the package were absent; any other import of it -- peft's LoRA dispatch for
    quantized layers, `fedhello.models.quantize`, lm-eval's own use of scipy -- proceeds as usual."""

    DEFERRED = {"bitsandbytes": ("peft.helpers",), "scipy": ("seaborn.",)}  # package -> importers refused

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        importers = self.DEFERRED.get(name.partition(".")[0])
        if not importers:
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if str(frame.f_globals.get("__name__", "")).startswith(importers):
                return importlib.machinery.ModuleSpec(name, self)
            frame = frame.f_back
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        raise ImportError(f"{spec.name} is not imported for this library by fedhello (see fedhello/runtime.py)")

    def exec_module(self, module):  # noqa: ANN001, ANN201
        raise ImportError("unreachable")


def defer_optional_imports() -> DeferOptionalImports:
    """Install `DeferOptionalImports` (once per process) and return it. The entry points call it before anything
    imports peft: the command line (`fedhello.cli`), the Flower apps, executor and SuperNode launcher
    (`fedhello.engines.flower`) and the comparison workers (`fedhello.compare`); importing fedhello as a library
    changes nothing in the importing process."""
    finder = next((f for f in sys.meta_path if isinstance(f, DeferOptionalImports)), None)
    if finder is None:
        finder = DeferOptionalImports()
        sys.meta_path.insert(0, finder)
    # On a CPU with AVX512-BF16, bitsandbytes tries to fetch an optional kernel from the hub and warns when it
    # cannot (offline machines); it then runs its own CPU code, so the warning says nothing a user can act on.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    return finder


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
