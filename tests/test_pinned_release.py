"""A tiny release trained before the issue-13 refactor still loads and gives the same outputs.

``tests/data/pinned_release`` (written once by ``tests/make_pinned_release.py``
with the code of commit c77f884) holds a calibrated mobilenetv2_050 release at
32 px, fixed PNG inputs and the logits, p(fake) and verdicts that code gave.
Any change to loading, preprocessing, crop averaging, temperature or
thresholds shows up here.
"""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakeface.modeling.detector import load_detector
from fakeface.modeling.inference import Detector

PINNED = Path(__file__).resolve().parent / "data" / "pinned_release"


@pytest.fixture(scope="module")
def expected():
    return json.loads((PINNED / "expected_outputs.json").read_text())


@pytest.fixture(scope="module")
def scores(expected):
    detector = Detector(load_detector(PINNED))
    images = [Image.open(PINNED / "inputs" / name).convert("RGB") for name in expected["inputs"]]
    return detector.score(images)


def test_pinned_release_gives_the_same_logits_and_p_fake(scores, expected):
    np.testing.assert_allclose(scores.logits, np.asarray(expected["logits"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.p_fake, np.asarray(expected["p_fake"]), rtol=1e-5)


def test_pinned_release_gives_the_same_verdicts(scores, expected):
    assert list(scores.verdicts) == expected["verdicts"]
    # The pin means something only if the thresholds split the inputs.
    assert len(set(expected["verdicts"])) > 1


def test_pinned_release_decision_comes_from_its_config():
    from fakeface.modeling.config import resolve_detector_config

    block = json.loads((PINNED / "config.json").read_text())["fakeface"]
    decision = resolve_detector_config(load_detector(PINNED)).decision
    assert decision.calibrated is True
    assert decision.temperature == pytest.approx(block["temperature"])
    assert (decision.threshold_fake, decision.threshold_real) == pytest.approx(
        (block["threshold_fake"], block["threshold_real"]))
