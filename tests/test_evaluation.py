"""Evaluation: metrics agree with scikit-learn, calibration, thresholds, robustness, plots, card tables."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.utils.constants import FAKE, REAL
from fakeface.modeling.config import Decision
from fakeface.evaluation.calibration import choose_thresholds, fit_temperature
from fakeface.evaluation.metrics import (
    ROBUSTNESS_CONDITIONS,
    apply_condition,
    average_precision,
    compute_group_metrics,
    compute_metrics,
    expected_calibration_error,
    json_safe,
    reliability_bins,
    robustness_sweep,
    roc_auc,
)


def _scores(seed, n=300, ties=True):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * labels, 0.2), 0, 1)
    return labels, (np.round(p, 2) if ties else p)  # rounding makes ties, the tricky case


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("threshold", [0.5, 0.37])
def test_metrics_agree_with_scikit_learn(seed, threshold):
    from sklearn import metrics

    labels, p = _scores(seed, ties=seed % 2 == 0)
    ours = compute_metrics(labels, p, threshold)
    predicted = (p >= threshold).astype(int)
    assert ours["roc_auc"] == pytest.approx(metrics.roc_auc_score(labels, p), abs=1e-12)
    assert ours["average_precision"] == pytest.approx(metrics.average_precision_score(labels, p), abs=1e-12)
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(labels, predicted), abs=1e-12)
    assert ours["f1"] == pytest.approx(metrics.f1_score(labels, predicted), abs=1e-12)
    assert ours["confusion_matrix"] == metrics.confusion_matrix(labels, predicted, labels=[REAL, FAKE]).tolist()
    assert ours["n"] == len(labels)


def test_ece_matches_scikit_learn_calibration_curve():
    from sklearn.calibration import calibration_curve

    labels, p = _scores(7)
    prob_true, prob_pred = calibration_curve(labels, p, n_bins=15, strategy="uniform")
    bins = reliability_bins(labels, p, n_bins=15)
    filled = bins.counts > 0
    np.testing.assert_allclose(bins.frac_fake[filled], prob_true, atol=1e-12)
    np.testing.assert_allclose(bins.mean_p_fake[filled], prob_pred, atol=1e-12)
    expected = np.sum(bins.counts[filled] / len(p) * np.abs(prob_true - prob_pred))
    assert expected_calibration_error(labels, p, 15) == pytest.approx(expected, abs=1e-12)
    assert expected > 0.01  # the scores above are not calibrated: the check is not vacuous


def test_perfect_and_inverted_scores():
    labels = np.array([0, 0, 1, 1])
    assert roc_auc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert average_precision(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_single_class_gives_nan_auc_and_a_note_not_a_crash():
    only_fakes = compute_metrics([1, 1, 1], [0.2, 0.6, 0.9])
    assert math.isnan(only_fakes["roc_auc"]) and math.isnan(only_fakes["average_precision"])
    assert "only fake" in only_fakes["notes"][0]
    assert only_fakes["accuracy"] == pytest.approx(2 / 3)
    assert only_fakes["confusion_matrix"] == [[0, 0], [1, 2]]
    only_reals = compute_metrics([0, 0], [0.2, 0.7])
    assert math.isnan(only_reals["roc_auc"]) and only_reals["fpr"] == 0.5
    empty = compute_metrics([], [])
    assert empty["n"] == 0 and empty["notes"] == ["no samples"]
    assert json_safe(only_fakes)["roc_auc"] is None  # NaN never reaches JSON


def test_bad_metric_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="labels must be"):
        compute_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics([0, 1], [0.5, float("nan")])


def test_fit_temperature_matches_torch_lbfgs_and_lowers_nll():
    from fakeface.evaluation.calibration import platt_targets

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(400, 2)) * 4.0                  # overconfident logits
    labels = (logits[:, 1] - logits[:, 0] + rng.normal(size=400) * 3 > 0).astype(int)
    ours = fit_temperature(logits, labels)
    temperature = torch.ones((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([temperature], lr=0.5, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)
    z, y = torch.tensor(logits), torch.tensor(labels)
    soft = torch.tensor(platt_targets(labels))
    assert soft[labels == 1, 1].unique().item() == pytest.approx((labels.sum() + 1) / (labels.sum() + 2))

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / temperature, soft)  # soft-target cross-entropy
        loss.backward()
        return loss

    optimizer.step(closure)
    assert ours == pytest.approx(temperature.item(), rel=1e-4)
    assert ours > 1.2  # overconfident logits need T > 1

    def nll(t):
        return torch.nn.functional.cross_entropy(z / t, y).item()

    assert nll(ours) < nll(1.0)
    assert fit_temperature(logits[labels == 1], labels[labels == 1]) == 1.0  # single class: no fit
    # Perfectly separated validation data: a finite temperature, not the lower clip.
    separable = np.c_[np.zeros(40), np.r_[np.full(20, -6.0), np.full(20, 6.0)] + rng.normal(size=40)]
    t = fit_temperature(separable, np.r_[np.zeros(20, int), np.ones(20, int)])
    assert 0.5 < t < 5


def test_thresholds_meet_the_target_false_positive_rate():
    labels, p = _scores(11, n=2000, ties=False)
    for target in (0.01, 0.05, 0.2):
        t = choose_thresholds(labels, p, target_fpr=target)
        reals, fakes = p[labels == REAL], p[labels == FAKE]
        fpr = np.mean(reals >= t.threshold_fake)
        assert fpr <= target and fpr > target - 0.01  # as many fakes caught as the target allows
        assert t.fpr_at_threshold == pytest.approx(fpr)
        assert np.mean(fakes < t.threshold_real) <= target
        assert t.threshold_real <= t.threshold_fake
        assert 0 < t.uncertain_fraction < 1   # overlapping classes leave an uncertain band


def test_thresholds_on_separable_and_single_class_data():
    t = choose_thresholds([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], target_fpr=0.0)
    assert 0.3 < t.threshold_fake <= 0.7
    assert t.threshold_real == t.threshold_fake and t.uncertain_fraction == 0
    single = choose_thresholds([1, 1], [0.4, 0.9])
    assert single.threshold_fake == 0.5 and "single class" in single.notes[0]
    with pytest.raises(ValueError, match="target_fpr"):
        choose_thresholds([0, 1], [0.1, 0.9], target_fpr=1.5)


def test_group_metrics_per_attribute_and_per_generator():
    labels = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.9, 0.4, 0.8, 0.2])
    by_gender = compute_group_metrics(labels, p, ["f", "m", "f", "m", None, "f"])
    assert set(by_gender) == {"f", "m"}
    assert by_gender["f"]["n"] == 3 and by_gender["f"]["roc_auc"] == 1.0
    assert by_gender["m"]["roc_auc"] == 0.0
    generators = ["camera", "camera", "gen-a", "gen-b", "gen-a", "camera"]
    by_gen = compute_group_metrics(labels, p, generators, against_other_class=True)
    # gen-b's single fake (0.4) is scored against all three reals.
    assert by_gen["gen-b"]["n"] == 4 and by_gen["gen-b"]["n_group"] == 1
    assert by_gen["gen-b"]["roc_auc"] == pytest.approx(2 / 3)
    assert by_gen["camera"]["n"] == 6 and by_gen["camera"]["fpr"] == pytest.approx(1 / 3)


class _ColourDetector:
    """Stands in for inference.Detector: p(fake) rises with high-frequency energy of the image."""

    decision = Decision()

    def scores_from_logits(self, logits):
        from fakeface.modeling.inference import Scores

        p = self.decision.p_fake(logits)
        return Scores(np.asarray(logits), p, [self.decision.verdict(float(v)) for v in p])

    def score_batches(self, images, batch_size=16):
        energy = []
        for image in images:
            a = np.asarray(image.convert("L"), dtype=np.float64)
            energy.append(np.abs(np.diff(a, axis=1)).mean())
        z = (np.array(energy) - 20.0) / 5.0
        return self.scores_from_logits(np.stack([np.zeros_like(z), z], axis=1))


def test_robustness_sweep_perturbs_each_condition():
    rng = np.random.default_rng(0)
    smooth = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (40, 90, 140)]
    noisy = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    rows = robustness_sweep(_ColourDetector(), smooth + noisy, [0, 0, 0, 1, 1, 1])
    by_name = {r["condition"]: r for r in rows}
    assert list(by_name) == list(ROBUSTNESS_CONDITIONS)
    assert by_name["clean"]["roc_auc"] == 1.0 and by_name["clean"]["tpr"] == 1.0
    # Blur and downscaling destroy pixel noise: the stand-in detector stops catching the fakes.
    assert by_name["blur"]["tpr"] < 1.0 and by_name["downscale0.5"]["n"] == 6
    assert apply_condition(noisy[0], "downscale0.5").size == (32, 32)
    assert apply_condition(noisy[0], "screenshot").size == (51, 51)
    with pytest.raises(ValueError, match="unknown robustness condition"):
        apply_condition(noisy[0], "sepia")


def test_figures_render_to_png(tmp_path):
    from fakeface.evaluation.plots import (
        confusion_figure, embedding_figure, pr_figure, project_2d, reliability_figure, robustness_figure,
        roc_figure, save_figure,
    )

    labels, p = _scores(5, n=60)
    figures = {
        "roc": roc_figure(labels, p, operating_threshold=0.6),
        "pr": pr_figure(labels, p),
        "confusion": confusion_figure(compute_metrics(labels, p)["confusion_matrix"]),
        "reliability": reliability_figure(labels, p),
        "robustness": robustness_figure([{"condition": "clean", "roc_auc": 0.9}, {"condition": "jpeg75", "roc_auc": None}]),
        "single-class roc": roc_figure([1, 1], [0.3, 0.4]),
    }
    points, method = project_2d(np.random.default_rng(0).normal(size=(40, 8)) + labels[:40, None])
    figures["embedding"] = embedding_figure(points, labels[:40], (p[:40] >= 0.5).astype(int), method=method)
    assert points.shape == (40, 2) and method in ("UMAP", "t-SNE")
    for name, figure in figures.items():
        path = save_figure(figure, tmp_path / f"{name}.png")
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 200, name
    # The ROC figure draws the measured curve: its AUC appears in the legend.
    legend = [t.get_text() for t in figures["roc"].axes[0].get_legend().get_texts()]
    assert f"AUC = {roc_auc(labels, p):.3f}" in legend


def test_card_tables_carry_the_numbers():
    from fakeface.training.card import build_card_tables
    from fakeface.utils.formatting import markdown_table

    labels, p = _scores(2, n=50)
    overall = compute_metrics(labels, p, 0.6)
    report = {"overall": overall, "overall_at_0.5": compute_metrics(labels, p),
              "per_generator": compute_group_metrics(labels, p, ["x"] * 50, 0.6, against_other_class=True),
              "per_attribute": {"gender": compute_group_metrics(labels, p, ["f", "m"] * 25, 0.6)},
              "robustness": [{"condition": "clean", "description": "as stored", **overall}]}
    tables = build_card_tables(report)
    assert f"{overall['roc_auc']:.4f}" in tables["overall_table"]
    assert "**gender**" in tables["attribute_tables"] and "| f |" in tables["attribute_tables"]
    assert "as stored" in tables["robustness_table"]
    assert markdown_table(["a"], [["x|y"], [float("nan")]]).splitlines()[2:] == ["| x\\|y |", "| — |"]


def test_calibrate_returns_a_new_decision_and_its_report():
    from fakeface.evaluation.calibration import calibrate, calibration_report
    from fakeface.modeling.config import VALIDATION_SOURCE

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(300, 2)) * 4.0
    labels = (logits[:, 1] - logits[:, 0] + rng.normal(size=300) * 3 > 0).astype(int)
    decision = calibrate(logits, labels, target_fpr=0.1)
    assert isinstance(decision, Decision) and decision.calibrated and decision.target_fpr == 0.1
    assert decision.temperature == fit_temperature(logits, labels)
    p = Decision(temperature=decision.temperature).p_fake(logits)
    expected = choose_thresholds(labels, p, 0.1)
    # The band contains the target-FPR thresholds (kept on their side of 0.5) and is widened from there.
    assert decision.threshold_fake >= max(expected.threshold_fake, 0.5)
    assert decision.threshold_real <= min(expected.threshold_real, 0.5)
    assert np.mean(p[labels == REAL] >= decision.threshold_fake) <= 0.1
    # ... until at most 5 % of validation gets a confident wrong verdict; the decision records it.
    assert decision.band_source == VALIDATION_SOURCE and decision.band_target == 0.05
    assert decision.confidently_wrong <= 0.05 and 0 < decision.coverage < 1
    report = calibration_report(logits, labels, decision)
    assert report["temperature"] == decision.temperature and report["thresholds"]["target_fpr"] == 0.1
    assert report["abstention"]["confidently_wrong"] == pytest.approx(decision.confidently_wrong)
    assert report["abstention"]["coverage"] == pytest.approx(decision.coverage)
    assert report["validation_ece_after"] < report["validation_ece_before"]
