"""Process set-up shared by the command line, the Flower apps, the benchmarks and the scripts."""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    """fedhello's own progress bar and run folder are enough: silence per-split `datasets` bars, model load
    reports and deprecation notices from inside transformers/peft, and lm-eval's warnings about being handed
    a model object rather than a hub name (not actionable for a fedhello user)."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    # `datasets` logs a read failure before raising it; the exception reaches the CLI and becomes one line
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # by name: importing lm_eval costs seconds
