"""Server-side aggregation: the `Aggregator` base and the generic rules every method may use (masked FedAvg per
tensor, rank-masked FedAvg per entry, the robust median, trimmed mean and Multi-Krum). Method-specific rules live
in their method's folder (`fedhello.methods`)."""

from fedhello.aggregation import fedavg, rank_fedavg, robust  # noqa: F401  (registers the generic rules)
from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.aggregation.fedavg import masked_fedavg

__all__ = ["AGGREGATORS", "Aggregator", "masked_fedavg"]
