"""The int8 fast path: fp32's verdicts on a committed release, on any x86 CPU, and fp32 whenever it must not be used.

int8 is compared with fp32 on ``tests/data/int8_release`` (written and
explained by ``tests/make_int8_release.py``): a tiny trained detector with
its exported int8 graph, reference inputs and ``fastpath.json``, plus 64
labelled fixed inputs, the export's own holdout. Nothing numeric is trained
or quantized here for those tests, so the only thing the CPU running them
decides is what it decides for a user: how its int8 and fp32 arithmetic
scores a shipped graph. Their margins come from the product, not from one
machine: the AUC budget the release was exported under, and the reference
check's tolerance (docs/performance.md: int8 is served only where the
reference inputs move less than that in p(fake)).

Why a fixed graph scores alike on every x86 CPU: the u8 x s8 products are
summed exactly in int32 on every path ONNX Runtime takes (VNNI, AMX, and
AVX2's int16 pair sums, which 7-bit weights cannot saturate:
``check_no_saturation``); what differs is fp32 rounding in the
requantization scales and in the few fp32 ops, far below the room the
generator left (it refuses an artefact where any input clear of the
thresholds comes within a quarter of the tolerance of changing its verdict).

The export itself is tested on an export made here from the committed
weights, with assertions that hold whatever int8 error this CPU gives.
"""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fakeface.evaluation.metrics import roc_auc
from fakeface.modeling.config import Decision
from fakeface.modeling.detector import create_detector, load_detector, save_detector, set_decision
from fakeface.modeling.fastpath import (
    ENV_THREADS, FAST_FP32_NAME, FAST_INFO_NAME, FAST_MODEL_NAME, FAST_REFERENCE_NAME, FP32_GRAPH_TOLERANCE_DP,
    REFERENCE_DRIFT_DP, REFERENCE_TOLERANCE_DP, FastDetector,
    QuantizationSettings, RefusalCode, check_no_saturation, check_reference_inputs, compute_weights_fingerprint,
    cpu_instruction_sets, export_fast_path, export_onnx, find_input_convs, load_fast_detector, load_fast_path,
    quantize_onnx, read_fast_path_info, release_files_sha256, resolve_num_threads,
)
from fakeface.modeling.fastpath import serving
from fakeface.modeling.inference import Detector
from tests.helpers import toy_images
from tests.make_int8_release import ARCH, INT8_RELEASE, PREPROCESSING, RELEASE_DIR, load_inputs

RELEASE = INT8_RELEASE / RELEASE_DIR
# A graph with a temperature of 4 baked into its logits: it moves the committed reference
# inputs by up to 0.27 in p(fake), more than the tolerance plus what they moved at export.
TAMPERED_LOGIT_SCALE = 0.25


def build_trained_release(folder) -> tuple:
    """A copy of the committed tiny trained release, int8 fast path included: (folder, its fastpath.json).

    Also used by tests/test_benchmark.py and tests/test_scan.py. A copy, so that
    its fast path is served (or not) alike on every CPU and a test may damage it.
    """
    shutil.copytree(RELEASE, folder, dirs_exist_ok=True)
    return folder, read_fast_path_info(folder)


@pytest.fixture(scope="module")
def committed():
    """The committed release scored on its fixed inputs, here, by fp32 and by the int8 graph it ships.

    The graph is run directly, not through the load-time checks, so that each test below can fail on its own.
    """
    images, labels = load_inputs()
    model = load_detector(RELEASE)
    fp32 = Detector(model)
    int8 = FastDetector(model, RELEASE / FAST_MODEL_NAME)
    return {"images": images, "labels": labels, "info": read_fast_path_info(RELEASE), "fp32": fp32,
            "scores_fp32": fp32.score(images), "scores_int8": int8.score(images)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The committed weights exported here: the export code under test, whatever this CPU's int8 error."""
    folder = tmp_path_factory.mktemp("exported")
    save_detector(load_detector(RELEASE), folder)
    calibration, _ = toy_images(1, 32)
    holdout, labels = load_inputs()
    return folder, export_fast_path(load_detector(folder), folder, calibration, holdout, labels)


def _copy(folder, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def _negate_head_weights(onnx_path) -> None:
    """The int8 graph computes something else than the fp32 model it claims to be: real and fake swapped."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    producers = {out: node for node in model.graph.node for out in node.output}
    head = [n for n in model.graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    weight_name = producers[head.input[1]].input[0]
    init = next(i for i in model.graph.initializer if i.name == weight_name)
    init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), weight_name))
    onnx.save(model, str(onnx_path))


def _scale_logits(onnx_path, factor: float) -> None:
    """The graph's logits multiplied by ``factor``: a wrong temperature baked into the graph."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(onnx_path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{name}_unscaled" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.asarray(factor, np.float32), "logit_scale"))
    model.graph.node.append(helper.make_node("Mul", [f"{output}_unscaled", "logit_scale"], [output]))
    onnx.save(model, str(onnx_path))


def _tamper(folder, tamper: str) -> None:
    if tamper == "reference_logits":  # the stored fp32 outputs no longer match the graph
        with np.load(folder / FAST_REFERENCE_NAME) as data:
            arrays = dict(data)
        arrays["logits_fp32"] = arrays["logits_fp32"][:, ::-1].copy()
        np.savez_compressed(folder / FAST_REFERENCE_NAME, **arrays)
    elif tamper == "negated_head":
        _negate_head_weights(folder / FAST_MODEL_NAME)
    elif tamper == "wrong_temperature":
        _scale_logits(folder / FAST_MODEL_NAME, TAMPERED_LOGIT_SCALE)
    else:
        raise ValueError(tamper)


def _clear_of_thresholds(p_fake: np.ndarray, decision: Decision, margin: float) -> np.ndarray:
    """Indices of the images whose p(fake) is further than ``margin`` from both thresholds."""
    distance = np.minimum(abs(p_fake - decision.threshold_real), abs(p_fake - decision.threshold_fake))
    return np.flatnonzero(distance > margin)


# --------------------------------------------------------------------------- int8 against fp32, on any CPU

def test_committed_release_passes_the_reference_check_here(committed):
    loaded = load_fast_path(RELEASE)
    assert loaded.refusal is None, loaded.refusal.message
    assert isinstance(loaded.detector, FastDetector) and loaded.runtime == "onnxruntime-int8"
    check = loaded.check
    assert loaded.detector.reference_check is check and check.images == 8
    assert check.tolerance == REFERENCE_TOLERANCE_DP == committed["info"]["reference"]["tolerance_abs_dp"]
    assert check.passed and check.max_abs_dp <= check.tolerance, check
    # The artefact leaves room for another CPU's rounding (a fact of the committed files, not of this CPU).
    assert check.export_max_abs_dp <= 0.75 * check.tolerance, check


def test_int8_keeps_the_auc_within_the_budget(committed):
    labels, info = committed["labels"], committed["info"]
    # fastpath.json measured the same drop on these very images where the release was exported.
    assert info["measured_on"] == "holdout" and info["images"] == len(labels)
    auc32 = roc_auc(labels, committed["scores_fp32"].p_fake)
    auc8 = roc_auc(labels, committed["scores_int8"].p_fake)
    assert auc32 > 0.9, "the detector does not separate its inputs: the comparison would be meaningless"
    assert auc32 - auc8 <= info["budget_auc"], (auc32, auc8, info["auc_drop"])


def test_int8_verdicts_match_fp32_away_from_the_thresholds(committed):
    """Where fp32's p(fake) is further from both thresholds than the most the reference check lets int8
    move a p(fake) on the serving CPU, no int8 rounding that passes it can change the verdict."""
    ref, new = committed["scores_fp32"], committed["scores_int8"]
    margin = committed["info"]["reference"]["tolerance_abs_dp"]
    clear = _clear_of_thresholds(ref.p_fake, committed["fp32"].decision, margin)
    assert len(clear) >= len(ref.p_fake) // 2, "too few inputs clear of the thresholds: nothing to compare"
    assert {ref.verdicts[i] for i in clear} == {"real", "fake", "uncertain"}, "every verdict should be compared"
    flipped = [(int(i), float(ref.p_fake[i]), float(new.p_fake[i])) for i in clear if new.verdicts[i] != ref.verdicts[i]]
    assert not flipped, f"(input, p_fp32, p_int8) whose int8 verdict differs: {flipped}"


@pytest.mark.parametrize("tamper", ["negated_head", "wrong_temperature"])
def test_agreement_checks_catch_a_broken_graph(committed, tmp_path, tamper):
    """The two assertions above fail for a graph that is not the model: they can fail."""
    folder = _copy(RELEASE, tmp_path)
    _tamper(folder, tamper)
    broken = FastDetector(load_detector(folder), folder / FAST_MODEL_NAME).score(committed["images"])
    ref = committed["scores_fp32"]
    clear = _clear_of_thresholds(ref.p_fake, committed["fp32"].decision, REFERENCE_TOLERANCE_DP)
    assert any(broken.verdicts[i] != ref.verdicts[i] for i in clear)
    auc_drop = roc_auc(committed["labels"], ref.p_fake) - roc_auc(committed["labels"], broken.p_fake)
    if tamper == "negated_head":
        assert auc_drop > committed["info"]["budget_auc"]
    # (a wrong temperature keeps the ranking, so only the verdicts and the reference check see it)


@pytest.mark.parametrize("tamper", ["reference_logits", "negated_head", "wrong_temperature"])
def test_disagreeing_reference_serves_fp32_with_the_reason(tmp_path, tamper):
    folder = _copy(RELEASE, tmp_path)
    _tamper(folder, tamper)
    loaded = load_fast_path(folder)
    assert loaded.detector is None and load_fast_detector(folder) is None
    refusal = loaded.refusal
    assert refusal.code is RefusalCode.REFERENCE_MISMATCH
    assert refusal.check is loaded.check and not refusal.check.passed
    assert refusal.check.max_abs_dp > refusal.check.tolerance == REFERENCE_TOLERANCE_DP
    assert f"{refusal.check.max_abs_dp:.3f}" in refusal.problem and refusal.message.startswith("ONNX fast path not used")


def test_a_graph_far_from_fp32_serves_where_it_computes_as_measured(tmp_path):
    """The absolute bound is not the only way through: a graph that moved a reference image further from fp32
    than the tolerance where it was exported (its AUC measured with that error) serves on a CPU that computes it
    as the export did; the same files, with a measurement that does not hold that error, are refused."""
    from fakeface.modeling.fastpath.reference import _crops_from_pixels

    folder = _copy(RELEASE, tmp_path)
    _scale_logits(folder / FAST_MODEL_NAME, TAMPERED_LOGIT_SCALE)
    info = read_fast_path_info(folder)
    fast = FastDetector(load_detector(folder), folder / FAST_MODEL_NAME, info=info)
    with np.load(folder / FAST_REFERENCE_NAME) as data:
        arrays = dict(data)
    pp = fast.preprocessing
    arrays["logits_int8"] = fast.run(_crops_from_pixels(arrays["pixels"], pp.mean, pp.std))
    np.savez_compressed(folder / FAST_REFERENCE_NAME, **arrays)
    p32, p8 = (fast.scores_from_logits(arrays[k]).p_fake for k in ("logits_fp32", "logits_int8"))
    moved = float(np.abs(p8 - p32).max())
    assert moved > REFERENCE_TOLERANCE_DP
    info["reference"]["tolerance_drift_dp"] = REFERENCE_DRIFT_DP

    def load_with(measured: float):
        (folder / FAST_INFO_NAME).write_text(json.dumps({**info, "max_abs_dp": measured}))
        return load_fast_path(folder)

    served = load_with(moved)
    assert served.detector is not None and served.check.passed, served.refusal
    assert served.check.max_abs_dp > served.check.tolerance and served.check.drift < 1e-5
    refused = load_with(moved - 2 * REFERENCE_DRIFT_DP)
    assert refused.detector is None and refused.refusal.code is RefusalCode.REFERENCE_MISMATCH


def test_app_serves_fp32_and_says_why_when_the_reference_disagrees(tmp_path):
    """A release whose fastpath_reference.npz was tampered with: the app serves fp32, the status and About tab say why."""
    from fakeface.app.render import render_about
    from fakeface.serving.models import ModelRegistry

    folder = _copy(RELEASE, tmp_path)
    _tamper(folder, "reference_logits")
    registry = ModelRegistry([str(folder)])
    [served] = registry.models
    assert served.scorer is served.detector and served.runtime == "torch-fp32"
    [status] = registry.status()["models"]
    fast = status["fast_path"]
    assert status["runtime"] == "torch-fp32" and fast["served"] is False and fast["code"] == "reference_mismatch"
    assert fast["check"]["passed"] is False and fast["check"]["max_abs_dp"] > fast["check"]["tolerance"]
    assert f"{fast['check']['max_abs_dp']:.3f}" in fast["problem"] and fast["fix"]
    about = render_about(registry.status(), [{"model": status}])
    assert "Why torch" in about and "reference_mismatch" in about
    # The untampered release is served int8 and its status says so.
    [good] = ModelRegistry([str(RELEASE)]).status()["models"]
    assert good["runtime"] == "onnxruntime-int8" and good["fast_path"]["served"] is True
    assert good["fast_path"]["check"]["passed"] is True


def test_shipped_graph_cannot_saturate_on_any_cpu():
    """Proved from the graph's own int8 weights, so it holds (or fails) on whatever CPU runs the test."""
    check = check_no_saturation(RELEASE / FAST_MODEL_NAME)
    assert check.layers > 10, "no quantized Conv/Gemm found: the check looked at nothing"
    assert check.ok and check.worst_pair_sum <= 32767, check
    info = read_fast_path_info(RELEASE)
    assert info["saturation"]["ok"] is True and info["quantization"]["reduce_range"] is True


# --------------------------------------------------------------------------- serving and refusals

def test_graph_takes_the_detector_crops_for_any_batch():
    fast = load_fast_detector(RELEASE)
    images, _ = toy_images(4, 5)
    crops = fast.prepare(images)
    assert tuple(crops.shape) == (5, PREPROCESSING.crops_per_image, *PREPROCESSING.input_size)
    one_by_one = np.concatenate([fast.logits([image]) for image in images])
    together = fast.logits(images)
    assert together.shape == (5, 2) and together.dtype == np.float32
    np.testing.assert_allclose(together, one_by_one, atol=1e-4)


def test_calibration_and_thresholds_stay_in_one_place():
    fast = load_fast_detector(RELEASE)
    images, _ = toy_images(5, 8)
    logits = fast.logits(images)
    decision = Decision(temperature=3.0, threshold_fake=0.9, threshold_real=0.1)
    set_decision(fast.model, decision)   # in memory only: the committed files stay as they are
    fast = fast.with_decision(decision)   # a Detector keeps the decision it was built with
    scores = fast.score(images)
    expected = Detector(fast.model).scores_from_logits(logits)
    np.testing.assert_allclose(scores.p_fake, expected.p_fake, atol=1e-6)
    assert scores.verdicts == expected.verdicts
    assert "uncertain" in scores.verdicts  # T=3 squeezes probabilities into the wide uncertain band


def test_fast_detector_accepts_a_loaded_model_or_detector():
    model = load_detector(RELEASE)
    assert isinstance(load_fast_detector(model), FastDetector)
    assert isinstance(load_fast_detector(Detector(model)), FastDetector)
    fresh = create_detector(ARCH, preprocessing=PREPROCESSING)  # not loaded from a folder
    assert load_fast_detector(fresh) is None


def test_absent_fast_path_means_fp32(tmp_path, caplog):
    folder = tmp_path / "plain"
    save_detector(create_detector(ARCH, preprocessing=PREPROCESSING), folder)
    assert load_fast_detector(folder) is None
    # ...and the fp32 path serves on its own.
    images, _ = toy_images(6, 3)
    scores = Detector(load_detector(folder)).score(images)
    assert len(scores.verdicts) == 3 and np.isfinite(scores.p_fake).all()


@pytest.mark.parametrize("damage, reason, code", [
    ("over_budget", "loses", RefusalCode.OVER_BUDGET),
    ("unmeasured", "never measured", RefusalCode.UNMEASURED),
    ("no_json", "missing or unreadable", RefusalCode.INFO_UNREADABLE),
    ("no_onnx", "model.int8.onnx is missing", RefusalCode.GRAPH_MISSING),
    ("corrupt_onnx", "cannot be loaded", RefusalCode.GRAPH_UNLOADABLE),
    ("other_weights", "different weights", RefusalCode.OTHER_WEIGHTS),
    ("other_preprocessing", "different preprocessing", RefusalCode.OTHER_PREPROCESSING),
    ("bad_json", "missing or unreadable", RefusalCode.INFO_UNREADABLE),
    ("format_1", "format 1", RefusalCode.UNKNOWN_FORMAT),
    ("no_reference", "reference inputs", RefusalCode.REFERENCE_MISSING),
    ("truncated_reference", "cannot be read", RefusalCode.REFERENCE_UNREADABLE),
])
def test_fast_path_is_refused_with_a_reason(tmp_path, caplog, damage, reason, code):
    folder = _copy(RELEASE, tmp_path)
    info_path = folder / FAST_INFO_NAME
    info = json.loads(info_path.read_text())
    if damage == "over_budget":
        info.update(within_budget=False, auc_drop=0.02)
        info_path.write_text(json.dumps(info))
    elif damage == "unmeasured":
        info["within_budget"] = None
        info_path.write_text(json.dumps(info))
    elif damage == "no_json":
        info_path.unlink()
    elif damage == "bad_json":
        info_path.write_text("{not json")
    elif damage == "no_onnx":
        (folder / FAST_MODEL_NAME).unlink()
    elif damage == "corrupt_onnx":
        data = (folder / FAST_MODEL_NAME).read_bytes()
        (folder / FAST_MODEL_NAME).write_bytes(data[: len(data) // 3])
    elif damage == "other_weights":
        model = load_detector(folder)
        with torch.no_grad():
            model.get_classifier().bias.add_(0.5)
        save_detector(model, folder)
    elif damage == "other_preprocessing":
        config = json.loads((folder / "config.json").read_text())
        config["fakeface"]["num_test_crops"] = 1
        (folder / "config.json").write_text(json.dumps(config))
    elif damage == "format_1":  # made before the graphs were checked for saturation
        info["format"] = 1
        info_path.write_text(json.dumps(info))
    elif damage == "no_reference":
        (folder / FAST_REFERENCE_NAME).unlink()
    elif damage == "truncated_reference":
        data = (folder / FAST_REFERENCE_NAME).read_bytes()
        (folder / FAST_REFERENCE_NAME).write_bytes(data[: len(data) // 2])
    caplog.set_level("INFO", logger="fakeface.modeling.fastpath")
    assert load_fast_detector(folder) is None
    assert reason in caplog.text
    loaded = load_fast_path(folder)
    assert loaded.detector is None and loaded.runtime == "torch-fp32"
    assert loaded.refusal.code is code and reason in loaded.refusal.problem and loaded.refusal.fix
    # The release still serves, in fp32.
    images, _ = toy_images(7, 2)
    assert len(Detector(load_detector(folder)).score(images).verdicts) == 2


def test_missing_onnxruntime_means_fp32(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    caplog.set_level("INFO", logger="fakeface.modeling.fastpath")
    assert load_fast_detector(RELEASE) is None
    assert "onnxruntime is not installed" in caplog.text
    assert load_fast_path(RELEASE).refusal.code is RefusalCode.RUNTIME_MISSING


def test_graph_that_could_saturate_is_refused_on_a_cpu_without_vnni(tmp_path, monkeypatch):
    folder = _copy(RELEASE, tmp_path)
    info = json.loads((folder / FAST_INFO_NAME).read_text())
    info["saturation"]["ok"] = False
    (folder / FAST_INFO_NAME).write_text(json.dumps(info))
    monkeypatch.setattr(serving, "cpu_instruction_sets", lambda *a: ("avx", "avx2", "fma"))
    assert load_fast_path(folder).refusal.code is RefusalCode.CAN_SATURATE
    monkeypatch.setattr(serving, "cpu_instruction_sets", lambda *a: ("avx2", "avx512f", "avx512_vnni"))
    assert isinstance(load_fast_path(folder).detector, FastDetector)  # VNNI accumulates in int32


def test_thread_count_from_env(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    assert 1 <= resolve_num_threads() <= 2
    monkeypatch.setenv(ENV_THREADS, "1")
    assert resolve_num_threads() == 1
    fast = load_fast_detector(RELEASE)
    assert fast.session.get_session_options().intra_op_num_threads == 1
    assert fast.session.get_session_options().inter_op_num_threads == 1
    # no CPU memory arena: it grew with every new batch shape under load (the load test's memory)
    assert fast.session.get_session_options().enable_cpu_mem_arena is False
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv(ENV_THREADS, bad)
        with pytest.raises(ValueError, match=ENV_THREADS):
            resolve_num_threads()


def test_cpu_instruction_sets_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n")
    assert cpu_instruction_sets(cpuinfo) == ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni")
    assert cpu_instruction_sets(tmp_path / "absent") == ()


# --------------------------------------------------------------------------- the export (made here)

@pytest.mark.slow
def test_export_writes_the_graph_and_an_honest_report(exported):
    folder, info = exported
    graph = folder / info["file"]
    assert graph.is_file() and (folder / FAST_INFO_NAME).is_file()
    assert [p.name for p in folder.glob("*.onnx")] == [graph.name], "one graph ships"
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert read_fast_path_info(folder) == json.loads(json.dumps(info))
    assert info["measured_on"] == "holdout" and info["images"] == 64 and info["calibration_images"] == 32
    assert info["within_budget"] is (info["auc_drop"] <= info["budget_auc"])
    # all-int8 is tried first; the input convolution goes fp32 only when all-int8 was over budget, and the
    # fp32 graph ships only when both were
    within = [a["within_budget"] for a in info["attempts"]]
    assert [a["input_conv"] for a in info["attempts"]] == (
        ["int8"] if within[0] else ["int8", "fp32"] if within[1] else ["int8", "fp32", "graph"])
    assert info["precision"] == ("fp32" if len(within) == 3 else "int8")
    assert info["input_conv"] == (None if len(within) == 3 else info["attempts"][-1]["input_conv"])
    assert info["attempts"][-1]["auc_drop"] == info["auc_drop"]
    # The report's numbers are recomputable from the two detectors (on this CPU, which made them).
    model = load_detector(folder)
    holdout, _ = load_inputs()
    p32 = Detector(model).score(holdout).p_fake
    p8 = FastDetector(model, graph, info=info).score(holdout).p_fake
    assert info["max_abs_dp"] == pytest.approx(float(np.abs(p32 - p8).max()), abs=1e-5)
    assert info["source"]["weights_sha256"] == compute_weights_fingerprint(model)
    # the saved files hold the exported model: their hashes let a server check the graph before building it
    assert info["source"]["files_sha256"] == release_files_sha256(folder)
    assert info["saturation"]["ok"] is True and check_no_saturation(graph).ok


@pytest.mark.slow
def test_export_reference_inputs_are_rescored_alike_where_they_were_made(exported):
    """Scored again on the CPU that exported them, the reference crops give the int8 logits stored with them."""
    folder, info = exported
    assert (folder / FAST_REFERENCE_NAME).stat().st_size < 2**20
    assert info["reference"]["images"] == 8 and info["reference"]["tolerance_abs_dp"] == REFERENCE_TOLERANCE_DP
    fast = FastDetector(load_detector(folder), folder / info["file"], info=info)
    check = check_reference_inputs(fast, folder / FAST_REFERENCE_NAME)
    assert check.images == 8 and check.max_abs_dp == pytest.approx(check.export_max_abs_dp, abs=1e-4)
    assert check.drift <= 1e-4


@pytest.mark.slow
def test_over_budget_export_tries_every_graph_and_is_refused(tmp_path, caplog):
    folder = tmp_path / "strict"
    save_detector(load_detector(RELEASE), folder)
    calibration, _ = toy_images(1, 8)
    holdout, labels = toy_images(2, 16)
    info = export_fast_path(load_detector(folder), folder, calibration, holdout, labels, budget_auc=-1.0)
    assert [a["input_conv"] for a in info["attempts"]] == ["int8", "fp32", "graph"]
    assert info["precision"] == "fp32" and info["within_budget"] is False
    assert not any(p.name.startswith(".") for p in folder.iterdir())
    caplog.set_level("INFO", logger="fakeface.modeling.fastpath")
    assert load_fast_detector(folder) is None and "loses" in caplog.text


def test_input_convolution_is_found_through_the_crop_reshape(tmp_path):
    import onnx

    path = tmp_path / "m.onnx"
    export_onnx(load_detector(RELEASE), path)
    names = find_input_convs(path)
    graph = onnx.load(str(path)).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    assert names == convs[:1] and len(convs) > 10


def _assert_fp32_graph_served(folder, images):
    """The release serves its fp32 graph: no int8 file, the torch model's scores to float rounding."""
    assert (folder / FAST_FP32_NAME).is_file() and not (folder / FAST_MODEL_NAME).exists()
    loaded = load_fast_path(folder)
    assert loaded.refusal is None and loaded.runtime == "onnxruntime-fp32", loaded.refusal
    assert loaded.check.max_abs_dp <= loaded.check.tolerance == FP32_GRAPH_TOLERANCE_DP
    want = Detector(load_detector(folder)).score(images).p_fake
    assert np.abs(loaded.detector.score(images).p_fake - want).max() < 1e-4


def test_export_without_labels_ships_the_fp32_graph(tmp_path):
    """int8 cannot be proven without labels, so the exported fp32 graph ships: no torch to serve, same scores."""
    folder = tmp_path / "unlabelled"
    save_detector(create_detector(ARCH, preprocessing=PREPROCESSING), folder)
    images, _ = toy_images(8, 6)
    info = export_fast_path(load_detector(folder), folder, images)
    assert info["measured_on"] == "calibration" and "auc_drop" not in info
    assert info["precision"] == "fp32" and info["within_budget"] is True and info["input_conv"] is None
    assert [a["input_conv"] for a in info["attempts"]] == ["graph"]   # no int8 made: nothing could prove it
    _assert_fp32_graph_served(folder, images)


@pytest.mark.slow
def test_int8_over_budget_ships_the_fp32_graph(tmp_path, monkeypatch):
    """An int8 graph that loses AUC (here: one whose logits are negated) is not shipped; the fp32 graph is."""
    import fakeface.modeling.fastpath.export as export

    def broken_int8(fp32_path, int8_path, *args, **kwargs):
        shutil.copy(fp32_path, int8_path)
        _scale_logits(int8_path, -1.0)
        return Path(int8_path)

    monkeypatch.setattr(export, "quantize_onnx", broken_int8)
    folder = tmp_path / "over"
    save_detector(load_detector(RELEASE), folder)
    holdout, labels = load_inputs()
    info = export_fast_path(load_detector(folder), folder, holdout[:8], holdout, labels)
    assert [(a["input_conv"], a["within_budget"]) for a in info["attempts"]] == [
        ("int8", False), ("fp32", False), ("graph", True)]
    assert info["precision"] == "fp32" and abs(info["auc_drop"]) <= info["budget_auc"]
    _assert_fp32_graph_served(folder, holdout[:8])


def test_bad_export_arguments_write_nothing(tmp_path):
    folder = tmp_path / "bad"
    model = create_detector(ARCH, preprocessing=PREPROCESSING)
    images, labels = toy_images(9, 4)
    with pytest.raises(ValueError, match="calibration image"):
        export_fast_path(model, folder, [])
    with pytest.raises(ValueError, match="one label per holdout image"):
        export_fast_path(model, folder, images, images, labels[:2])
    assert not folder.exists() or not any(folder.iterdir())


@pytest.mark.slow
def test_saturation_check_catches_full_range_weights(tmp_path):
    """The settings releases shipped before (8-bit weights with u8 activations) fail the same check."""
    model = load_detector(RELEASE)
    export_onnx(model, tmp_path / "fp32.onnx")
    calibration, _ = toy_images(1, 8)
    old = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "old.onnx", Detector(model), calibration,
                        settings=QuantizationSettings(reduce_range=False))
    check = check_no_saturation(old)
    assert not check.ok and check.worst_pair_sum > 32767 and check.worst_layer, check


@pytest.mark.slow
def test_a_saved_release_is_exported_again_with_its_card_and_results(tmp_path):
    """scripts/export_fast_path.py: a release saved without a usable graph gets one from its dataset (validation to
    calibrate, test to measure), and its card's fast-path section and eval_results.json say what now ships."""
    from fakeface.training.release import reexport_fast_path
    from tests.test_training import make_tiny_dataset, write_dataset_folder

    data = write_dataset_folder(make_tiny_dataset(n_train=8, n_validation=12, n_test=16), tmp_path / "data")
    folder = tmp_path / "release"
    save_detector(create_detector(ARCH, preprocessing=PREPROCESSING), folder)
    (folder / "README.md").write_text("# card\n\n## Fast path (int8 ONNX)\n\nstale words\n\n## Limits\n\nkept\n")
    (folder / "eval_results.json").write_text(json.dumps({"auc": 0.5, "fast_path": {"error": "old"}}))
    info = reexport_fast_path(folder, str(data))
    assert info["measured_on"] == "holdout" and info["images"] == 16 and info["calibration_images"] == 12
    assert (folder / info["file"]).is_file() and load_fast_path(folder).detector is not None
    card = (folder / "README.md").read_text()
    assert "stale words" not in card and card.count("## Fast path") == 1 and card.endswith("## Limits\n\nkept\n")
    assert f"| precision | {info['precision']} |" in card
    results = json.loads((folder / "eval_results.json").read_text())
    assert results["auc"] == 0.5 and results["fast_path"]["file"] == info["file"]
