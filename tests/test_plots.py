"""The ROC and PR figures: the measured curve with its summary, or, with one class only, a note instead."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from fakeface.evaluation.metrics import average_precision, roc_auc
from fakeface.evaluation.plots import pr_figure, roc_figure


def _texts(figure) -> list[str]:
    return [text.get_text() for text in figure.axes[0].texts]


@pytest.mark.parametrize("make, summary, name, legend", [
    (roc_figure, roc_auc, "ROC", "AUC"), (pr_figure, average_precision, "PR curve", "AP"),
])
def test_a_curve_figure_draws_its_curve_or_says_it_is_undefined(make, summary, name, legend):
    rng = np.random.default_rng(3)
    labels, p = rng.integers(0, 2, 40), rng.random(40)
    both = make(labels, p)
    assert _texts(both) == []
    assert f"{legend} = {summary(labels, p):.3f}" in [t.get_text() for t in both.axes[0].get_legend().get_texts()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one_class = make([0, 0, 0], [0.2, 0.5, 0.9])   # no fakes: neither curve is defined
    assert _texts(one_class) == [f"{name} undefined:\nboth classes are needed"]
    assert one_class.axes[0].get_legend() is None
