"""Classification metrics: accuracy and macro-F1 from predictions."""

import pytest
import torch

from fedhello.tasks.base import classification_metrics


def test_macro_f1_penalises_predicting_the_majority_class():
    labels = [torch.tensor([0, 0, 0, 0, 1, 2])]
    majority = classification_metrics([torch.zeros(6, dtype=torch.long)], labels, 6.0, 3)
    assert majority["accuracy"] == pytest.approx(4 / 6)
    assert majority["macro_f1"] == pytest.approx((2 * 4 / (4 + 6)) / 3)  # F1 of class 0 = 0.8; 0 for the others
    perfect = classification_metrics([labels[0].clone()], labels, 0.0, 3)
    assert perfect["macro_f1"] == 1.0 and perfect["samples"] == 6 and majority["loss"] == 1.0
