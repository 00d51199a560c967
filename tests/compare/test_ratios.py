"""Weak-tier resource ratios on hand-made client entries: the largest plan, plans over budget, the full
reference (total memory, the run's own quantization, no recompute) and which tiers are weak."""

import pytest

from fedhello.compare.ratios import (
    ResourceCell,
    full_reference,
    memory_key,
    over_budget,
    partition_ratios,
    tier_label,
    weak_tiers,
)

ALL = [0, 1, 2, 3]


def entry(tier, layers, total, peak=None, cpu=1.0, **extra):
    """A client entry as `train.record_resources: true` writes it (weights = total - peak)."""
    peak = total if peak is None else peak
    return {"tier": tier, "layers": layers, "total_mem_mb": total, "peak_mem_mb": peak, "weights_mb": total - peak,
            "step_seconds": 9.0, "step_cpu_seconds": cpu, **extra}


def test_the_largest_plan_catches_a_random_allocator_that_sometimes_reaches_layer_0():
    tiers = [{"layers": 2, "memory_mb": 60.0}, {"layers": 4}]
    reference = ResourceCell("full", tiers, [entry(1, ALL, 100.0, cpu=2.0)] * 3)
    # a random allocator: 2 layers per weak plan; a plan that holds layer 0 keeps activations through the whole
    # model (90 MiB), the usual upper pairs do not (40 MiB). One plan in five reaches layer 0.
    draws = [[2, 3], [1, 3], [0, 2], [2, 3], [1, 2]] * 4
    weak = [entry(0, layers, 90.0 if 0 in layers else 40.0, cpu=1.8 if 0 in layers else 0.8) for layers in draws]
    random_cell = ResourceCell("random", tiers, [*weak, entry(1, ALL, 100.0, cpu=2.0)])
    ratios = partition_ratios([reference, random_cell])[1]
    assert ratios.memory == pytest.approx(0.40)  # the median plan: the layer-0 plans do not show
    (worst,) = ratios.tiers
    assert worst.tier == 0 and worst.label == "T0 (2 layers, train ≤ 60 MiB)"
    assert worst.memory == pytest.approx(0.90) and worst.step == pytest.approx(0.9)  # the largest plan does
    assert (worst.over_budget, worst.plans) == (4, 20)  # the layer-0 plans break the 60 MiB training budget


def test_a_plan_over_any_of_its_budgets_counts_once():
    tier = {"layers": 2, "memory_mb": 50.0, "total_memory_mb": 80.0, "seconds_per_step": 1.0}
    fits = entry(0, [2, 3], total=70.0, peak=40.0, cpu=0.9)
    assert not over_budget(fits, tier, "step_cpu_seconds")
    # the layer count of a tier with a memory or time budget is what the budget trains with activations kept:
    # a plan that recomputes to train 3 layers within every budget has broken none
    assert not over_budget(entry(0, [1, 2, 3], 70.0, 40.0, 0.9, recompute=2), tier, "step_cpu_seconds")
    assert over_budget(entry(0, [1, 2, 3], 70.0, 40.0, 0.9), {"layers": 2}, "step_cpu_seconds")  # a count tier
    assert over_budget(entry(0, [2, 3], 70.0, 55.0, 0.9), tier, "step_cpu_seconds")  # training memory
    assert over_budget(entry(0, [2, 3], 85.0, 40.0, 0.9), tier, "step_cpu_seconds")  # total memory
    assert over_budget(entry(0, [2, 3], 70.0, 40.0, 1.2), tier, "step_cpu_seconds")  # step time (CPU)
    assert over_budget(fits, tier, "step_seconds")  # by wall time (9 s) the same plan is over
    everything = entry(0, ALL, 200.0, 150.0, 5.0)
    cell = ResourceCell("full", [tier, {"layers": 4}], [fits, everything, entry(1, ALL, 100.0)])
    (worst,) = partition_ratios([cell])[0].tiers
    assert (worst.over_budget, worst.plans) == (1, 2)  # over all four budgets, counted once
    # a budget the entry does not record is not counted as broken
    assert not over_budget({"tier": 0, "layers": [3]}, tier, "step_cpu_seconds")


def test_quantized_tiers_compare_total_memory_and_the_reference_ignores_how_many_int8_clients_there_are():
    # tier 0 loads int8 weights (30 MiB instead of 60) and needs more training memory (55 instead of 40)
    tiers = [{"layers": 4, "total_memory_mb": 90.0, "quantization": "int8"}, {"layers": 4}]
    plain, int8 = entry(1, ALL, total=100.0, peak=40.0), entry(0, ALL, total=85.0, peak=55.0)

    def fedit_ratio(int8_clients):
        cell = ResourceCell("full", tiers, [int8] * int8_clients + [plain] * (4 - int8_clients))
        assert full_reference([cell], "total_mem_mb", 4) == 100.0  # the unquantized plan, whatever the pool
        (worst,) = partition_ratios([cell])[0].tiers
        return worst.memory

    # the same FedIT plans read the same, however many int8 clients the pool holds (the median of every
    # all-layer plan read 0.85 with one int8 client and 1.00 with three; by peak memory 1.38 and 1.00)
    assert fedit_ratio(1) == fedit_ratio(3) == pytest.approx(0.85)
    # the training-memory ratio (what memory_mb limits) leaves the weights out: 55 / 40
    cell = ResourceCell("full", tiers, [int8, plain, plain])
    (worst,) = partition_ratios([cell])[0].tiers
    assert worst.training_memory == pytest.approx(55 / 40)
    # tier quantization equal to the run's, or null, is the run's own
    same = ResourceCell("full", [{"layers": 4, "quantization": "int8"}], [int8], quantization="int8")
    assert same.loads_run_quantization(int8) and not ResourceCell("full", tiers, []).loads_run_quantization(int8)


def test_memory_is_total_memory_unless_a_record_lacks_it():
    assert memory_key([entry(0, ALL, 100.0, 40.0)]) == "total_mem_mb"
    old = {"tier": 0, "layers": ALL, "peak_mem_mb": 40.0}
    assert memory_key([entry(0, ALL, 100.0, 40.0), old]) == "peak_mem_mb"  # never a total over a peak


def test_recomputing_clients_are_no_reference():
    tiers = [{"layers": 1}, {"layers": 4}]
    cell = ResourceCell("full", tiers, [entry(1, ALL, 100.0), entry(1, ALL, 60.0, recompute=True),
                                        entry(1, ALL, 62.0, recompute=True), entry(0, [3], 50.0)])
    assert full_reference([cell], "total_mem_mb", 4) == 100.0
    assert partition_ratios([cell])[0].tiers[0].memory == pytest.approx(0.5)


def test_every_budget_kind_ranks_tiers():
    # a tier limited only by its total memory is weak (the run fills in the layer count its budget allows,
    # often all of them: it used to tie with the unbounded tier, and the weak-tier columns went blank)
    assert weak_tiers([{"layers": None, "total_memory_mb": 500.0}, {"layers": None}], 4) == [0]
    assert weak_tiers([{"layers": 4, "total_memory_mb": 500.0}, {"layers": 4}], 4) == [0]
    assert weak_tiers([{"layers": 4}, {"layers": 4, "seconds_per_step": 0.5}], 4) == [1]
    # weakest first: fewer layers, then less training memory
    tiers = [{"layers": 4}, {"layers": 2, "memory_mb": 80.0}, {"layers": 1}, {"layers": 2, "memory_mb": 50.0}]
    assert weak_tiers(tiers, 4) == [2, 3, 1]
    assert weak_tiers([{"layers": 2}, {"layers": 2}], 4) == [] and weak_tiers([{"layers": 4}], 4) == []
    assert tier_label(1, {"layers": 3, "total_memory_mb": 500.0, "quantization": "nf4"}) == \
        "T1 (3 layers, total ≤ 500 MiB, nf4)"


def test_a_cell_with_one_client_and_one_tier_has_no_weak_tier():
    tiers = [{"layers": 1}, {"layers": 4}]
    fedit = ResourceCell("full", tiers, [entry(0, ALL, 100.0), entry(1, ALL, 100.0)])
    centralized = ResourceCell("full", [{"share": 1.0, "layers": None}], [entry(0, ALL, 100.0)] * 3)
    ratios = partition_ratios([fedit, centralized])
    assert ratios[0].tiers[0].memory == pytest.approx(1.0)
    assert ratios[1].tiers == () and ratios[1].memory is None and ratios[1].step is None
