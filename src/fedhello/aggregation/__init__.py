"""Server-side aggregation of client updates. Importing registers the built-in aggregators."""

from fedhello.aggregation import fedavg, fedpilot, flexlora, hetlora  # noqa: F401  (registers)
from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.aggregation.fedavg import masked_fedavg

__all__ = ["AGGREGATORS", "Aggregator", "masked_fedavg"]
