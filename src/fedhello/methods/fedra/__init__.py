"""FedRA: each client draws its k layers uniformly at random every round."""

import numpy as np

from fedhello.allocation import ALLOCATORS, Allocator, sample_layers
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan


@ALLOCATORS.register("random")
class RandomAllocator(Allocator):
    """FedRA-style: each client draws its k layers uniformly at random every round."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        uniform = np.ones(self.num_layers)
        return {cid: Plan(sample_layers(rng, uniform, k)) for cid, k in budgets.items()}


register(Method("fedra", "FedRA: each client draws its k layers uniformly at random every round", strategy("random")))
