"""Per-cell numbers on hand-made records: how fast a run reaches a target accuracy and what it uploaded."""

import pytest

from fedhello.compare.cells import time_to_target

# round 2 is not evaluated but its clients still uploaded; round 3 first reaches 0.76 (= 95 % of 0.80)
CURVE = [(1, 0.50), (3, 0.76), (4, 0.74), (5, 0.80)]
UPLOADS = [(1, 1_000_000.0), (2, 2_000_000.0), (3, 1_500_000.0), (4, 1_000_000.0), (5, 1_000_000.0)]


def test_rounds_and_mb_until_the_first_evaluated_round_reaching_the_target():
    assert time_to_target(CURVE, UPLOADS, 0.95 * 0.80) == (3, pytest.approx(4.5))  # 1 + 2 + 1.5 MB
    assert time_to_target(CURVE, UPLOADS, 0.45) == (1, pytest.approx(1.0))
    assert time_to_target(CURVE, UPLOADS, 0.80) == (5, pytest.approx(6.5))  # reaching it exactly counts
    assert time_to_target(CURVE, UPLOADS, 0.81) == (None, None)  # never reached
    assert time_to_target([], UPLOADS, 0.1) == (None, None)
