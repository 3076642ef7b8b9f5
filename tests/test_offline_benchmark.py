"""The offline training benchmark script: it trains, and its Markdown shows the numbers of its own JSON."""
import copy
import json
import re

import pytest

from benchmarks.offline import ROBUST_TARGETS, render_offline_benchmark
from scripts import train_benchmark  # the command line as users run it (scripts/ is on pytest's pythonpath)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("offline-benchmark")
    argv = ["--images", "64", "--input-size", "32", "--epochs", "mobilenetv2_050=1", "--batch-size", "8",
            "--architectures", "mobilenetv2_050", "--recipes", "robust,seed", "--num-workers", "0",
            "--output-dir", str(work / "runs"), "--results-dir", str(work / "results")]
    assert train_benchmark.main(argv) == 0
    data = json.loads((work / "results" / "offline_benchmark.json").read_text())
    return data, (work / "results" / "offline_benchmark.md").read_text(), argv


@pytest.mark.slow
def test_every_configuration_is_trained_and_measured(tiny_run):
    data, _, argv = tiny_run
    assert [(r["architecture"], r["recipe"]) for r in data["runs"]] == [("mobilenetv2_050", "robust"),
                                                                        ("mobilenetv2_050", "seed")]
    for row in data["runs"]:
        for key in ("auc_clean", "auc_jpeg75", "auc_downscale0.5", "ece", "train_images_per_second"):
            assert row[key] is not None, key
        assert 0.0 <= row["auc_clean"] <= 1.0 and 0.0 <= row["ece"] <= 1.0
        assert row["train_images_per_second"] > 0 and row["steps"] > 0
    assert data["command"].endswith(" ".join(argv))
    assert sum(data["splits"].values()) == 64


@pytest.mark.slow
def test_markdown_carries_the_json_numbers(tiny_run):
    data, markdown, _ = tiny_run
    assert data["command"] in markdown
    for row in data["runs"]:
        assert f"| {row['architecture']} | {row['recipe']} | 1 ({row['best_epoch']}) | {row['auc_clean']:.4f} | " \
               f"{row['auc_jpeg75']:.4f} | {row['auc_downscale0.5']:.4f} |" in markdown
    robust = next(r for r in data["runs"] if r["recipe"] == "robust")
    verdict = "met" if robust["auc_clean"] >= ROBUST_TARGETS["clean"] else "MISSED"
    assert f"clean {robust['auc_clean']:.4f}" in markdown and f"({verdict})" in markdown
    assert "seed vs robust" in markdown


@pytest.mark.slow
def test_the_explanation_of_a_missed_target_follows_the_numbers(tiny_run):
    data = copy.deepcopy(tiny_run[0])
    robust = next(r for r in data["runs"] if r["recipe"] == "robust")
    robust.update({"auc_clean": 0.999, "auc_jpeg75": 0.99, "auc_downscale0.5": 0.95})
    met = render_offline_benchmark(data)
    assert "MISSED" not in met.split("## Targets")[1].split("##")[0] and "Why 0.5×" not in met
    robust["auc_downscale0.5"] = 0.7
    missed = render_offline_benchmark(data)
    assert re.search(r"downscale0\.5 0\.7000 ± 0\.\d{4} < 0\.9 \(MISSED\)", missed) and "Why 0.5×" in missed


def test_bad_epochs_argument_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_benchmark.build_parser().parse_args(["--epochs", "resnet50"])
    assert "ARCH=EPOCHS" in capsys.readouterr().err


def test_auc_standard_error_agrees_with_the_bootstrap():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from benchmarks.offline import auc_standard_error

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60), np.ones(60)]
    scores = np.r_[rng.normal(0, 1, 60), rng.normal(1.8, 1, 60)]
    auc = roc_auc_score(labels, scores)
    boot = []
    for _ in range(1500):
        i, j = rng.integers(0, 60, 60), rng.integers(60, 120, 60)
        idx = np.r_[i, j]
        boot.append(roc_auc_score(labels[idx], scores[idx]))
    se = auc_standard_error(auc, 60, 60)
    assert se == pytest.approx(np.std(boot), rel=0.2)
    assert auc_standard_error(auc, 240, 240) < se and auc_standard_error(1.0, 60, 60) == 0.0
    assert auc_standard_error(None, 60, 60) is None and auc_standard_error(0.9, 0, 60) is None
