"""fedhello: federated LoRA fine-tuning of foundation models on clients with unequal resources."""

import logging

__version__ = "0.1.0"

# peft imports bitsandbytes whenever it is installed; on a CPU with AVX512-BF16 bitsandbytes then tries to fetch an
# optional kernel from the hub and warns on every import when it cannot (offline machines): it falls back to its
# own CPU code, so the warning says nothing a user can act on. Errors still come through.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
