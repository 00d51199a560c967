"""fedhello: federated LoRA fine-tuning of foundation models on clients with unequal resources."""

import importlib.abc
import importlib.machinery
import logging
import sys

__version__ = "0.1.0"


class _DeferBitsandbytes(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Keep `import peft` from importing bitsandbytes.

    `peft.helpers` imports bitsandbytes eagerly whenever it is installed (for one helper fedhello does not use),
    and bitsandbytes' import runs `torch.compile`, which loads TorchInductor: about 1 s more for every process
    that imports peft -- every CLI call, ClientApp and executor -- whether or not it quantizes anything. This
    finder makes that one import fail as if bitsandbytes were absent (peft.helpers handles that); any other
    import of bitsandbytes, peft's LoRA dispatch for quantized layers and `fedhello.models.quantize` included,
    proceeds as usual."""

    def find_spec(self, name, path=None, target=None):  # noqa: ANN001, ANN201 - importlib protocol
        if name != "bitsandbytes":
            return None
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_globals.get("__name__") == "peft.helpers":
                return importlib.machinery.ModuleSpec(name, self)
            frame = frame.f_back
        return None

    def create_module(self, spec):  # noqa: ANN001, ANN201
        raise ImportError("bitsandbytes is imported only when a quantized model is loaded (fedhello)")

    def exec_module(self, module):  # noqa: ANN001, ANN201
        raise ImportError("unreachable")


if not any(isinstance(f, _DeferBitsandbytes) for f in sys.meta_path):
    sys.meta_path.insert(0, _DeferBitsandbytes())

# On a CPU with AVX512-BF16, bitsandbytes tries to fetch an optional kernel from the hub and warns when it cannot
# (offline machines); it then runs its own CPU code, so the warning says nothing a user can act on.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
