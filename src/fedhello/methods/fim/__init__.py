"""FIM-HLA: layers drawn by Fisher importance (uniformly at random during warm-up), and its budget-true variant."""

from fedhello.methods.base import Method, register, strategy
from fedhello.methods.fim.allocator import FisherAllocator
from fedhello.methods.fim.options import FisherOptions

__all__ = ["FisherAllocator", "FisherOptions"]

register(Method("fim", "FIM-HLA: layers drawn by Fisher importance (random during warm-up)", strategy("fim")))
register(
    Method(
        "fim-bt",
        "budget-true FIM-HLA: Fisher importance chooses the layers, each plan fitted to its budget",
        strategy("fim", depth_aware=True, recompute=True),
    )
)
