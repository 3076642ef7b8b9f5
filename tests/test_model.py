"""The detector core: create, save, load (folder, local-dir:, Hub, transformers), publish."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.utils.constants import LABEL_NAMES
from fakeface.utils.hub import ErrorKind
from fakeface.modeling.config import Decision, resolve_detector_config
from fakeface.modeling.inference import Detector, StaleDetectorError
from fakeface.modeling.detector import (
    DetectorLoadError,
    PretrainedWeightsUnavailable,
    create_detector,
    load_detector,
    parse_detector_source,
    push_detector,
    save_detector,
    set_decision,
    set_face_crop,
    set_release_facts,
)
from fakeface.data.preprocess import Preprocessing, resolve_preprocessing

PP = Preprocessing(input_size=(3, 64, 64), num_test_crops=5)
DECISION = Decision(temperature=1.7, threshold_fake=0.8, threshold_real=0.3, target_fpr=0.05, calibrated=True)


def _random_init(model, seed):
    """Give every parameter and BN buffer non-trivial values so logits differ per input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [b for n, b in model.named_buffers() if "running" in n]:
            tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.2 + (0.9 if tensor.ndim == 1 else -0.1))
    return model.eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = _random_init(create_detector("mobilenetv2_100", preprocessing=PP), seed=0)
    set_decision(model, DECISION)
    folder = save_detector(model, tmp_path_factory.mktemp("detector"))
    return model, folder


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_saved_config_carries_labels_preprocessing_and_settings(saved):
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == list(LABEL_NAMES)
    assert config["num_classes"] == 2
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    assert config["fakeface"]["crop_protocol"] == "native-crops"
    assert config["fakeface"]["num_test_crops"] == 5
    assert config["fakeface"]["temperature"] == pytest.approx(1.7)
    assert "num_classes" not in config.get("model_args", {}), "breaks transformers' TimmWrapper"
    assert "fakeface" not in config["pretrained_cfg"], "timm's PretrainedCfg rejects unknown keys"
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pth")), "no pickles"


def test_local_round_trip_same_logits_and_preprocessing(saved, batch):
    model, folder = saved
    for source in (str(folder), f"local-dir:{folder}"):
        loaded = load_detector(source)
        with torch.no_grad():
            torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)
        assert resolve_preprocessing(loaded) == resolve_preprocessing(model) == PP
        assert resolve_detector_config(loaded) == resolve_detector_config(model)
        assert resolve_detector_config(loaded).decision == DECISION
        assert resolve_detector_config(loaded).face_crop is None


def test_face_crop_and_release_facts_round_trip(saved, tmp_path):
    from fakeface.faces.crop import FaceCrop

    model, _ = saved
    copy = create_detector("mobilenetv2_100", preprocessing=PP)
    copy.load_state_dict(model.state_dict())
    crop = FaceCrop(margin=0.3, min_face_px=48)
    set_face_crop(copy, crop)
    set_release_facts(copy, recipe="robust")
    with pytest.raises(ValueError, match="set_decision"):
        set_release_facts(copy, threshold_fake=0.1)   # decisions only go through set_decision
    loaded = load_detector(save_detector(copy, tmp_path / "with-crop"))
    config = resolve_detector_config(loaded)
    assert config.face_crop == crop and Detector(loaded).face_crop == crop
    assert config.decision == Decision() and loaded.pretrained_cfg["fakeface"]["recipe"] == "robust"
    block = json.loads((tmp_path / "with-crop" / "config.json").read_text())["fakeface"]
    assert block["face_crop"]["margin"] == 0.3
    set_face_crop(copy, None)
    assert resolve_detector_config(copy).face_crop is None


def test_detector_decides_with_the_decision_it_was_built_with(saved, batch):
    model, folder = saved
    loaded = load_detector(folder)
    detector = Detector(loaded)
    logits = detector.logits([Image.new("RGB", (64, 64), (90, 120, 150))])
    assert detector.decision == DECISION
    assert not hasattr(detector, "settings")   # no untyped settings dict: decision/preprocessing only
    strict = Decision(temperature=1.0, threshold_fake=0.99, threshold_real=0.01, calibrated=True)
    stricter = detector.with_decision(strict)
    assert stricter.decision == strict and detector.decision == DECISION   # a new Detector, the old one unchanged
    assert stricter.scores_from_logits(logits).verdicts == [strict.verdict(float(strict.p_fake(logits)[0]))]
    set_decision(loaded, strict)
    assert stricter.scores_from_logits(logits).verdicts   # deciding with the model's new decision: fine
    with pytest.raises(StaleDetectorError):
        detector.scores_from_logits(logits)               # built before: would silently keep old thresholds
    assert Detector(loaded).decision == strict


def test_timm_and_transformers_give_the_same_logits(saved, batch):
    import timm
    from transformers import AutoModelForImageClassification

    model, folder = saved
    with torch.no_grad():
        expected = model(batch)
        by_timm = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(batch)
        hf = AutoModelForImageClassification.from_pretrained(str(folder)).eval()
        by_transformers = hf(pixel_values=batch).logits
    torch.testing.assert_close(by_timm, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(by_transformers, expected, rtol=0, atol=1e-6)
    assert [hf.config.id2label[i] for i in range(2)] == list(LABEL_NAMES)


def test_transformers_pipeline_classifies_with_our_labels(saved):
    from transformers import pipeline

    _, folder = saved
    classify = pipeline("image-classification", model=str(folder))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8))
    result = classify(image)
    assert sorted(r["label"] for r in result) == sorted(LABEL_NAMES)
    assert sum(r["score"] for r in result) == pytest.approx(1.0, abs=1e-4)


def test_detector_scores_use_the_saved_temperature_and_thresholds(saved):
    _, folder = saved
    detector = Detector.from_pretrained(str(folder))
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 255, (90, 70, 3), dtype=np.uint8)) for _ in range(4)]
    scores = detector.score(images)
    logits = torch.as_tensor(scores.logits)
    expected = torch.softmax(logits / 1.7, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(scores.p_fake, expected, rtol=1e-6)
    for p, verdict in zip(scores.p_fake, scores.verdicts):
        assert verdict == ("fake" if p >= 0.8 else "real" if p < 0.3 else "uncertain")


@pytest.mark.parametrize("architecture", ["resnet50", "mobilenetv2_100"])
def test_first_class_architectures_are_binary_detectors(architecture):
    model = create_detector(architecture, preprocessing=PP)
    assert model.num_classes == 2
    assert model.pretrained_cfg["label_names"] == list(LABEL_NAMES)
    assert "tag" not in model.pretrained_cfg  # not an ImageNet checkpoint any more
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_detector("not_a_net")


@pytest.mark.slow
def test_pretrained_weights_unavailable_offline_says_so():
    # conftest points HF_ENDPOINT at a closed port: there is no Hub. (mobilenetv2_100
    # has offline weights, tests/test_pretrained.py; resnet50 has none.)
    with pytest.raises(PretrainedWeightsUnavailable, match="from scratch") as caught:
        create_detector("resnet50", pretrained=True)
    assert caught.value.kind == ErrorKind.UNREACHABLE and caught.value.architecture == "resnet50"
    assert "--pretrained-path" in caught.value.fix


def test_pretrained_weights_from_a_local_file(tmp_path):
    from safetensors.torch import save_file
    import timm

    imagenet = _random_init(timm.create_model("mobilenetv2_100"), seed=3)
    path = tmp_path / "imagenet.safetensors"
    save_file(imagenet.state_dict(), str(path))
    model = create_detector("mobilenetv2_100", pretrained_path=path)
    torch.testing.assert_close(model.conv_stem.weight, imagenet.conv_stem.weight)
    assert model.num_classes == 2  # the ImageNet head is replaced, not loaded


def _copy(folder, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(folder, target)
    return target


def test_truncated_weights_give_a_clear_error(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(DetectorLoadError, match="model.safetensors is corrupt or truncated") as caught:
        load_detector(str(folder))
    assert caught.value.kind == ErrorKind.CORRUPT_WEIGHTS and caught.value.file == "model.safetensors"
    assert caught.value.fix and caught.value.fix in str(caught.value)


def test_missing_weights_and_config_give_clear_errors(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(DetectorLoadError, match="model.safetensors is missing") as caught:
        load_detector(str(folder))
    assert caught.value.kind == ErrorKind.MISSING_WEIGHTS
    (folder / "config.json").unlink()
    with pytest.raises(DetectorLoadError, match="config.json is missing") as caught:
        load_detector(str(folder))
    assert (caught.value.kind, caught.value.file) == (ErrorKind.NOT_FOUND, "config.json")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(DetectorLoadError, match="not valid JSON") as caught:
        load_detector(str(folder))
    assert caught.value.kind == ErrorKind.BAD_CONFIG
    with pytest.raises(DetectorLoadError, match="does not exist") as caught:
        load_detector(f"local-dir:{tmp_path / 'nowhere'}")
    assert caught.value.kind == ErrorKind.NOT_FOUND


def test_weights_of_another_architecture_are_refused(saved, tmp_path):
    folder = _copy(saved[1], tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "mobilenetv2_050"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(DetectorLoadError, match="does not match architecture 'mobilenetv2_050': .*of another shape") as caught:
        load_detector(str(folder))
    assert caught.value.kind == ErrorKind.CORRUPT_WEIGHTS


def test_source_parsing():
    assert parse_detector_source("hf-hub:org/name@v1").revision == "v1"
    assert parse_detector_source("org/name").kind == "hub"
    assert parse_detector_source("local-dir:/x").kind == "local"
    with pytest.raises(DetectorLoadError, match="neither an existing folder") as caught:
        parse_detector_source("just-a-word")
    assert (caught.value.kind, caught.value.source) == (ErrorKind.BAD_SOURCE, "just-a-word")


# --------------------------------------------------------------------------- Hub (loopback fake)

def test_hub_round_trip_timm_transformers_and_pinned_revision(saved, batch, hub):
    import timm
    from transformers import AutoModelForImageClassification

    model, folder = saved
    first = push_detector(folder, "fakeface/detector", commit_message="first")
    with torch.no_grad():
        expected = model(batch)
        torch.testing.assert_close(load_detector("hf-hub:fakeface/detector")(batch), expected, rtol=0, atol=0)
        torch.testing.assert_close(
            timm.create_model("hf-hub:fakeface/detector", pretrained=True).eval()(batch), expected, rtol=0, atol=1e-6
        )
        hf = AutoModelForImageClassification.from_pretrained("fakeface/detector").eval()
        torch.testing.assert_close(hf(pixel_values=batch).logits, expected, rtol=0, atol=1e-6)

    # A second release does not disturb the first: pinning its sha still loads it.
    retrained = _random_init(create_detector("mobilenetv2_100", preprocessing=PP), seed=9)
    second_folder = save_detector(retrained, folder.parent / "second")
    push_detector(second_folder, "fakeface/detector", commit_message="second")
    with torch.no_grad():
        latest = load_detector("fakeface/detector")(batch)
        pinned = load_detector(f"hf-hub:fakeface/detector@{first}")(batch)
    torch.testing.assert_close(pinned, expected, rtol=0, atol=0)
    assert not torch.allclose(latest, expected)
    assert load_detector(f"hf-hub:fakeface/detector@{first}").fakeface_files.revision == first


def test_push_sends_only_release_files(saved, hub, tmp_path):
    from huggingface_hub import HfApi

    folder = _copy(saved[1], tmp_path)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "optimizer.bin").write_bytes(b"optimizer state")
    (folder / ".env").write_text("OPENAI_API_KEY=sk-never-uploaded")
    push_detector(folder, "fakeface/clean")
    files = set(HfApi().list_repo_files("fakeface/clean"))
    assert {"config.json", "model.safetensors"} <= files
    assert not any(f.startswith("checkpoints/") or f.endswith(".env") for f in files)


def test_missing_hub_repo_is_a_clear_error(saved, hub):
    with pytest.raises(DetectorLoadError, match="was not found on the Hub") as caught:
        load_detector("hf-hub:fakeface/does-not-exist")
    assert (caught.value.kind, caught.value.source) == (ErrorKind.NOT_FOUND, "hf-hub:fakeface/does-not-exist")
    push_detector(saved[1], "fakeface/present")
    with pytest.raises(DetectorLoadError, match="revision 'nope'") as caught:
        load_detector("hf-hub:fakeface/present@nope")
    assert (caught.value.kind, caught.value.revision) == (ErrorKind.NOT_FOUND, "nope")


def test_unreachable_hub_serves_the_cached_copy_with_a_notice(saved, batch, hub):
    model, folder = saved
    push_detector(folder, "fakeface/cached")
    load_detector("fakeface/cached")  # populates the cache
    with hub.offline():
        cached = load_detector("fakeface/cached")
        assert "cached revision" in cached.fakeface_files.notice
        with torch.no_grad():
            torch.testing.assert_close(cached(batch), model(batch), rtol=0, atol=0)
        with pytest.raises(DetectorLoadError, match="could not be reached.*no cached copy") as caught:
            load_detector("fakeface/never-downloaded")
        assert caught.value.kind == ErrorKind.UNREACHABLE
