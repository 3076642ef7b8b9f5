"""Honest abstention: verdicts agree with p(fake), the uncertain band is chosen for few confident mistakes.

Covers the clamp of crossing thresholds (old releases), the confidently-wrong
and coverage measures, the band chooser (including when it cannot meet its
target), a band given from outside, the reason the app shows, and the card's words.
"""
import json

import numpy as np
import pytest

from fakeface.evaluation.abstention import (
    AbstentionBand, abstention_rates, choose_abstention_band, load_abstention_band,
)
from fakeface.evaluation.calibration import calibrate
from fakeface.modeling.config import VALIDATION_SOURCE, Decision, clamp_thresholds
from fakeface.utils.constants import FAKE, REAL

UNSEEN = "generators it never saw (faces-dev, each family held out)"


def _overlapping(seed=0, n=2000):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)


# --------------------------------------------------------------------------- a verdict agrees with its number

def test_crossing_thresholds_are_refused_when_made_and_clamped_when_loaded():
    with pytest.raises(ValueError, match="contradict"):
        Decision(threshold_fake=0.2, threshold_real=0.2)
    assert clamp_thresholds(0.2, 0.2) == (0.2, 0.5)
    assert clamp_thresholds(0.7, 0.9) == (0.5, 0.9)
    assert clamp_thresholds(0.3, 0.7) == (0.3, 0.7)       # already on their sides: untouched
    # make demo's release: 0.20 / 0.20 called an FFHQ photo at p(fake) 0.397 "likely AI-generated".
    old = Decision.from_cfg({"temperature": 2.0, "threshold_fake": 0.2, "threshold_real": 0.2, "calibrated": True})
    assert (old.threshold_real, old.threshold_fake) == (0.2, 0.5)
    assert old.verdict(0.397) == "uncertain" and "cross p(fake) 0.5" in old.threshold_note
    assert "contradicts its p(fake)" in old.reason(0.397)
    # Re-saved, the clamped thresholds and the note survive; an old block without band fields loads.
    assert Decision.from_cfg(old.to_cfg()) == old
    assert Decision.from_cfg({"threshold_fake": 0.8, "threshold_real": 0.3}).band_source is None


@pytest.mark.parametrize("t_real,t_fake", [(0.2, 0.2), (0.453, 0.453), (0.9, 0.95), (0.0, 1.0), (0.6, 0.4)])
def test_no_loaded_decision_calls_a_score_against_its_side_of_one_half(t_real, t_fake):
    decision = Decision.from_cfg({"threshold_real": min(t_real, t_fake), "threshold_fake": max(t_real, t_fake)})
    for p in np.linspace(0, 1, 201):
        verdict = decision.verdict(p)
        assert (verdict != "fake" or p >= 0.5) and (verdict != "real" or p < 0.5)


# --------------------------------------------------------------------------- the measures

def test_confidently_wrong_and_coverage_count_over_all_images():
    labels = [REAL, REAL, REAL, FAKE, FAKE, FAKE, FAKE, REAL]
    p = [0.1, 0.45, 0.8, 0.2, 0.5, 0.9, 0.6, 0.55]
    rates = abstention_rates(labels, p, 0.3, 0.7)
    # confident: 0.1 real (right), 0.8 real->fake (wrong), 0.2 fake->real (wrong), 0.9 fake (right)
    assert rates.n == 8 and rates.coverage == 4 / 8 and rates.confidently_wrong == 2 / 8
    assert rates.uncertain_fraction == 4 / 8
    assert rates.false_positive_rate == 1 / 4 and rates.false_negative_rate == 1 / 4 and rates.fakes_caught == 1 / 4
    everything = abstention_rates(labels, p, 0.0, 1.0)
    assert everything.coverage == 0 and everything.confidently_wrong == 0
    assert np.isnan(abstention_rates([], [], 0.5, 0.5).coverage)


# --------------------------------------------------------------------------- the chooser

def test_chooser_meets_the_target_at_the_largest_coverage():
    labels, p = _overlapping()
    band = choose_abstention_band(labels, p, 0.05)
    assert band.met and band.source == VALIDATION_SOURCE and not band.notes
    assert band.threshold_real <= 0.5 <= band.threshold_fake
    rates = abstention_rates(labels, p, band.threshold_real, band.threshold_fake)
    assert band.confidently_wrong == rates.confidently_wrong <= 0.05 and band.coverage == rates.coverage
    # No other band does better: every pair of distinct scores is tried.
    grid = np.unique(np.r_[p, 0.0, 0.5, 1.0])
    lo, hi = grid[grid <= 0.5][::5], grid[grid >= 0.5][::5]
    for t_real in lo:
        for t_fake in hi:
            other = abstention_rates(labels, p, t_real, t_fake)
            assert other.confidently_wrong > 0.05 or other.coverage <= band.coverage
    # A stricter target needs a wider band.
    strict = choose_abstention_band(labels, p, 0.01)
    assert strict.coverage < band.coverage and strict.threshold_real <= band.threshold_real


def test_chooser_only_widens_from_its_start_and_keeps_separable_data_fully_covered():
    labels, p = [0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]
    band = choose_abstention_band(labels, p, 0.0)
    assert band.met and band.coverage == 1.0 and band.confidently_wrong == 0.0
    assert (band.threshold_real, band.threshold_fake) == (0.5, 0.5)      # nothing to abstain on
    wide = choose_abstention_band(labels, p, 0.0, start=(0.15, 0.85))
    assert wide.threshold_real <= 0.15 and wide.threshold_fake >= 0.85


def test_chooser_says_so_when_no_band_meets_the_target():
    # Reals scored 1.0 are called fake whatever the band: the target cannot be met.
    saturated = choose_abstention_band([REAL, REAL, FAKE, FAKE], [1.0, 1.0, 0.9, 0.2], 0.05)
    assert not saturated.met and saturated.confidently_wrong == 0.5
    assert "no band reaches 5 % confidently wrong" in saturated.notes[0]
    # A chance-level model reaches 5 % only by abstaining on almost everything: below a required coverage.
    rng = np.random.default_rng(3)
    chance = choose_abstention_band(rng.integers(0, 2, 500), rng.random(500), 0.05, min_coverage=0.5)
    assert not chance.met and chance.confidently_wrong <= 0.05 and chance.coverage < 0.5
    assert "below the required 50 %" in chance.notes[0]
    empty = choose_abstention_band([], [], 0.05)
    assert not empty.met and empty.coverage is None and "no held-out images" in empty.notes[0]
    with pytest.raises(ValueError, match="target"):
        choose_abstention_band([0, 1], [0.2, 0.8], 1.5)


# --------------------------------------------------------------------------- a band from outside

def test_calibration_takes_a_band_measured_on_held_out_generators(tmp_path):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(400, 2)) * 3.0
    labels = (logits[:, 1] - logits[:, 0] + rng.normal(size=400) * 2 > 0).astype(int)
    path = tmp_path / "band.json"
    path.write_text(json.dumps({"threshold_real": 0.1, "threshold_fake": 0.95, "source": UNSEEN,
                                "confidently_wrong": 0.048, "coverage": 0.31, "n": 900}))
    band = load_abstention_band(path)
    decision = calibrate(logits, labels, band=band)
    assert (decision.threshold_real, decision.threshold_fake) == (0.1, 0.95)
    assert decision.band_source == UNSEEN and (decision.confidently_wrong, decision.coverage) == (0.048, 0.31)
    assert "generators it never saw" in decision.reason(0.6)
    # A band narrower than validation's target-FPR thresholds is widened to contain them, and notes it.
    narrow = AbstentionBand(0.5, 0.5, UNSEEN).widened_to(0.3, 0.8)
    assert (narrow.threshold_real, narrow.threshold_fake) == (0.3, 0.8) and "widened" in narrow.notes[0]
    path.write_text(json.dumps({"threshold_real": 0.6, "threshold_fake": 0.9, "source": UNSEEN}))
    with pytest.raises(ValueError, match="band.json"):
        load_abstention_band(path)


# --------------------------------------------------------------------------- what the app and the card say

def test_reason_says_why_the_model_abstains():
    band = Decision(threshold_real=0.3, threshold_fake=0.7, band_source=UNSEEN, band_target=0.05,
                    confidently_wrong=0.05, coverage=0.4)
    assert band.reason(0.41) == ("p(fake) 0.41 lies in the band 0.30–0.70 where this model was wrong too often on "
                                 f"{UNSEEN}; it abstains rather than guess.")
    assert band.reason(0.8).startswith("p(fake) 0.80 is at or above") and band.reason(None) is None
    assert "below the model's real threshold 0.30" in band.reason(0.1)


def test_card_states_the_confidently_wrong_rate_and_coverage_in_plain_words():
    from fakeface.training.card import abstention_text

    measured = Decision(threshold_real=0.31, threshold_fake=0.72, band_source=VALIDATION_SOURCE, band_target=0.05,
                        confidently_wrong=0.048, coverage=0.62)
    text = abstention_text(measured)
    assert "from 0.310 up to 0.720 the model answers `uncertain`" in text
    assert "4.8 % of the images got a confident wrong verdict" in text and "62.0 % got a confident verdict" in text
    assert "generators it never saw" in text and "missed" not in text
    missed = abstention_text(Decision(threshold_real=0.0, threshold_fake=1.0, band_source=UNSEEN, band_target=0.05,
                                      confidently_wrong=0.2, coverage=0.3))
    assert "The target was missed" in missed and "seen in training" not in missed
    old = abstention_text(Decision.from_cfg({"threshold_real": 0.453, "threshold_fake": 0.453}))
    assert "was not measured for this release" in old and "cross p(fake) 0.5" in old


def test_verdict_card_and_face_rows_show_uncertain_with_the_reason():
    from fakeface.app.render import render_verdict

    decision = Decision(threshold_real=0.3, threshold_fake=0.7, band_source=UNSEEN)
    result = {"verdict": "uncertain", "p_fake": 0.41, "reason": decision.reason(0.41),
              "models": [{"model": "m", "p_fake": 0.41, "verdict": "uncertain", "threshold_real": 0.3,
                          "threshold_fake": 0.7, "calibrated": True}],
              "faces": [{"face": 1, "box": [0, 0, 9, 9], "p_fake": 0.41, "verdict": "uncertain",
                         "reason": decision.reason(0.41), "most_suspicious": True},
                        {"face": 2, "box": [20, 0, 29, 9], "p_fake": 0.35, "verdict": "uncertain",
                         "reason": decision.reason(0.35), "cut_by_border": True}]}
    html = render_verdict(result)
    assert 'data-testid="reason">Uncertain: p(fake) 0.41 lies in the band 0.30–0.70' in html
    first, second = html.split('data-testid="face-row"')[1:]
    # The photo's face points to the card's reason instead of repeating it; another uncertain face gives its own.
    assert "uncertain: the reason above" in first and "lies in the band" not in first
    assert "Uncertain: p(fake) 0.35 lies in the band" in second
    assert "rather than guess; cut by the photo&#x27;s border" in second   # html-escaped
