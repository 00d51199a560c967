"""Named methods: Fed-HeLLo and the peer baselines as presets of (allocator, aggregator, options)."""

from fedhello.methods.presets import METHODS, Method, apply_method, method_config, method_overrides

__all__ = ["METHODS", "Method", "apply_method", "method_config", "method_overrides"]
