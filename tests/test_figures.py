"""Figures a user sees first: accuracy.png names the task's metric and counts rounds in whole numbers, also
when the run evaluated once (issue 23, items 6 and 8)."""

from fedhello.figures import accuracy_lines, curves
from fedhello.rundir import RunData


def visible_ticks(ax) -> list[float]:
    low, high = ax.get_xlim()
    return [float(t) for t in ax.get_xticks() if low <= t <= high]


def test_a_single_evaluation_has_whole_round_ticks():
    ax = accuracy_lines({"": ([1], [0.42])}).axes[0]
    assert visible_ticks(ax) == [1.0]
    ax = accuracy_lines({"": ([3], [0.42])}).axes[0]
    assert visible_ticks(ax) == [3.0]
    ax = accuracy_lines({"": ([1, 2, 3, 4, 5, 6, 7, 8], [0.5] * 8)}).axes[0]
    assert all(t == int(t) for t in visible_ticks(ax)) and len(visible_ticks(ax)) >= 4


def test_plots_name_the_tasks_metric():
    assert accuracy_lines({"": ([1], [0.4])}).axes[0].get_ylabel() == "test accuracy"
    assert accuracy_lines({"": ([1], [0.4])}, metric="rouge_l").axes[0].get_ylabel() == "test rouge_l"
    record = {"round": 1, "accuracy": 0.2, "rougeL": 0.2, "loss": 3.0, "train_loss": 3.1}
    run = RunData(path=None, name="lm", config={}, metrics=[record], summary={"metric": "rouge_l"})
    metric_axis = curves([run]).axes[0]
    assert metric_axis.get_ylabel() == "test rouge_l" and visible_ticks(metric_axis) == [1.0]
