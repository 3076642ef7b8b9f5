"""A tiny release trained before the issue-13 refactor still loads and gives the same outputs.

``tests/data/pinned_release`` (written once by ``tests/make_pinned_release.py``
with the code of commit c77f884) holds a calibrated mobilenetv2_050 release at
32 px, fixed PNG inputs and the logits, p(fake) and verdicts that code gave.
Any change to loading, preprocessing, crop averaging, temperature or
thresholds shows up here. Its verdicts were regenerated once, on purpose,
when crossing thresholds started to load clamped at 0.5 (see
``verdicts_note`` in expected_outputs.json); logits and p(fake) are the originals.
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
    # Its stored thresholds (0.453 / 0.453) cross 0.5: read clamped, no verdict contradicts its p(fake).
    for p, verdict in zip(scores.p_fake, scores.verdicts):
        assert (verdict != "fake" or p >= 0.5) and (verdict != "real" or p < 0.5)


def test_pinned_release_decision_comes_from_its_config():
    from fakeface.modeling.config import resolve_detector_config

    block = json.loads((PINNED / "config.json").read_text())["fakeface"]
    decision = resolve_detector_config(load_detector(PINNED)).decision
    assert decision.calibrated is True
    assert decision.temperature == pytest.approx(block["temperature"])
    # Stored 0.453 / 0.453 crosses p(fake) 0.5: the fake threshold is read as 0.5, and the decision says so.
    assert block["threshold_fake"] < 0.5
    assert (decision.threshold_fake, decision.threshold_real) == pytest.approx((0.5, block["threshold_real"]))
    assert "cross p(fake) 0.5" in decision.threshold_note
    assert decision.band_source is None and decision.confidently_wrong is None   # never measured: says so
