"""`quiet_libraries`: the notes of peft and flwr-datasets and TorchScript's deprecation notices do not reach a
user, also after Flower's simulation turned deprecation warnings on, and not in the processes a run starts
(issue 23, item 8)."""

import os
import warnings

from fedhello.runtime import CHILD_WARNINGS, quiet_libraries


def emit_library_warnings() -> list[str]:
    """Warnings as the libraries raise them (attributed to their modules), and one of fedhello's own."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("once", category=DeprecationWarning)  # what importing flwr.simulation does
        quiet_libraries()
        notes = [
            ("fan_in_fan_out is set to False but the target module is `Conv1D`.", UserWarning,
             "peft.tuners.lora.model"),
            ("Classes: [3] will NOT be used due to the chosen configuration.", UserWarning,
             "flwr_datasets.partitioner.pathological_partitioner"),
            ("`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
             DeprecationWarning, "torch.jit._script"),
            ("round 2: no update was bounded", UserWarning, "fedhello.server.loop"),
        ]
        for message, category, module in notes:
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
    return [str(w.message) for w in caught]


def test_library_notes_are_silenced_and_fedhellos_own_kept(monkeypatch):
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    assert emit_library_warnings() == ["round 2: no update was bounded"]
    # Ray's workers and Flower's processes inherit the TorchScript filter before they import anything
    assert os.environ["PYTHONWARNINGS"] == CHILD_WARNINGS
    quiet_libraries()  # idempotent: the filter is not repeated
    assert os.environ["PYTHONWARNINGS"] == CHILD_WARNINGS
