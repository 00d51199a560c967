"""fedhello: federated LoRA fine-tuning of foundation models on clients with unequal resources."""

import importlib.abc
import importlib.machinery
import logging
import sys

__version__ = "0.1.0"


class _DeferOptionalImports(importlib.abc.MetaPathFinder, importlib.abc.Loader):
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
        raise ImportError(f"{spec.name} is not imported for this library by fedhello (see fedhello/__init__.py)")

    def exec_module(self, module):  # noqa: ANN001, ANN201
        raise ImportError("unreachable")


if not any(isinstance(f, _DeferOptionalImports) for f in sys.meta_path):
    sys.meta_path.insert(0, _DeferOptionalImports())

# On a CPU with AVX512-BF16, bitsandbytes tries to fetch an optional kernel from the hub and warns when it cannot
# (offline machines); it then runs its own CPU code, so the warning says nothing a user can act on.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
