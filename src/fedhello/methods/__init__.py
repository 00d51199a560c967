"""Named methods: Fed-HeLLo and the peer baselines as presets of (allocator, aggregator, options)."""

from fedhello.methods import compatibility  # noqa: F401  (adds the pairing check to config validation)
from fedhello.methods.presets import METHODS, Method, apply_method, method_config, method_overrides

__all__ = ["METHODS", "Method", "apply_method", "method_config", "method_overrides"]
