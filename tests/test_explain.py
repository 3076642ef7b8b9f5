"""Grad-CAM (fakeface.modeling.explain): shapes and range on timm CNNs, that it follows the evidence, and the overlay."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fakeface.utils.constants import FAKE, REAL
from fakeface.modeling.explain import crop_coverage, explain_image, gradcam, overlay_heatmap
from fakeface.modeling.inference import Detector
from fakeface.modeling.detector import create_detector
from fakeface.data.preprocess import Preprocessing, eval_crop_origins


@pytest.mark.parametrize(
    "arch, pp",
    [
        ("mobilenetv2_100", Preprocessing(input_size=(3, 64, 64), num_test_crops=5)),
        ("resnet50", Preprocessing(input_size=(3, 64, 64), crop_protocol="resize", num_test_crops=1)),
    ],
)
def test_gradcam_on_timm_cnns_gives_one_bounded_map_per_crop(arch, pp):
    torch.manual_seed(0)
    detector = Detector(create_detector(arch, preprocessing=pp))   # random weights: plumbing only
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    crops = detector.prepare([image])[0]
    heatmap = gradcam(detector.model, crops)
    assert heatmap.shape == (pp.crops_per_image, 64, 64)
    assert heatmap.dtype == np.float32
    assert np.isfinite(heatmap).all()
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert not detector.model.training
    # No parameter gradients are left behind by the explanation.
    assert all(p.grad is None for p in detector.model.parameters())


class _BrightnessDetector(nn.Module):
    """A transparent 'detector': its fake logit is the amount of bright pixels, wherever they are.

    Features are active only where the input is bright, so the evidence for
    "fake" sits exactly where the bright patch is.
    """

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / 27)

    def forward_features(self, x):
        return F.relu(self.conv(x) - 0.5)           # (N, 4, H, W), >0 only on bright regions

    def forward_head(self, features):
        z = features.mean(dim=(2, 3)).sum(dim=1)
        return torch.stack([-z, z], dim=1)          # (N, 2): [real, fake]

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def _patch_input(y: int, x: int, size: int = 48, patch: int = 10) -> torch.Tensor:
    crops = torch.full((1, 3, size, size), -1.0)
    crops[:, :, y:y + patch, x:x + patch] = 2.0
    return crops


@pytest.mark.parametrize("corner", [(4, 4), (30, 6), (8, 34), (34, 34)])
def test_gradcam_lights_the_region_that_drives_the_fake_logit(corner):
    model = _BrightnessDetector().eval()
    y, x = corner
    heatmap = gradcam(model, _patch_input(y, x))[0]
    peak_y, peak_x = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert y - 1 <= peak_y <= y + 10 and x - 1 <= peak_x <= x + 10, (peak_y, peak_x)
    inside = heatmap[y:y + 10, x:x + 10].mean()
    outside = np.delete(heatmap.ravel(), np.ravel_multi_index(np.mgrid[y:y + 10, x:x + 10].reshape(2, -1), heatmap.shape)).mean()
    assert inside > 0.5 and outside < 0.1


def test_gradcam_towards_real_does_not_light_evidence_for_fake():
    model = _BrightnessDetector().eval()
    crops = _patch_input(10, 10)
    assert gradcam(model, crops, target=FAKE).max() == pytest.approx(1.0)
    assert gradcam(model, crops, target=REAL).max() == 0.0


def test_gradcam_refuses_models_without_spatial_features():
    class Flat(nn.Module):
        def forward_features(self, x):
            return x.mean(dim=(2, 3))

        def forward_head(self, f):
            return torch.stack([f.sum(1), -f.sum(1)], 1)

    with pytest.raises(TypeError, match="spatial"):
        gradcam(Flat(), torch.zeros(1, 3, 8, 8))
    with pytest.raises(TypeError, match="forward_features"):
        gradcam(nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8))


def test_overlay_puts_each_crop_heatmap_where_the_crop_came_from():
    pp = Preprocessing(input_size=(3, 64, 64), num_test_crops=5)
    image = Image.new("RGB", (160, 120), (128, 128, 128))
    origins = eval_crop_origins(120, 160, pp)                     # centre, TL, TR, BL, BR
    heatmap = np.zeros((5, 64, 64), np.float32)
    heatmap[origins.index((0, 160 - 64))] = 1.0                   # only the top-right crop is hot
    overlay = np.asarray(overlay_heatmap(image, heatmap, pp, alpha=0.6, colormap="jet")).astype(int)
    assert overlay.shape == (120, 160, 3)
    top_right, bottom_left = overlay[10, 150], overlay[110, 10]
    assert top_right[0] > top_right[2]                            # hot: red end of the colour map
    assert bottom_left[2] > bottom_left[0]                        # cold: blue end
    # (y=10, x=80) lies in no crop: darkened, untinted grey.
    uncovered = overlay[10, 80]
    assert np.allclose(uncovered, 128 * 0.45, atol=1)


def test_overlay_of_resize_protocol_covers_the_whole_image_and_respects_max_side():
    pp = Preprocessing(input_size=(3, 32, 32), crop_protocol="resize", num_test_crops=1)
    image = Image.new("RGB", (1200, 600), (90, 90, 90))
    heatmap = np.zeros((1, 32, 32), np.float32)
    heatmap[0, :, 16:] = 1.0                                      # right half hot
    overlay = overlay_heatmap(image, heatmap, pp, max_side=300)
    assert overlay.size == (300, 150)
    arr = np.asarray(overlay).astype(int)
    assert arr[75, 280, 0] > arr[75, 280, 2] and arr[75, 20, 2] > arr[75, 20, 0]


def test_overlay_checks_heatmap_count():
    pp = Preprocessing(input_size=(3, 32, 32), num_test_crops=5)
    with pytest.raises(ValueError, match="heatmaps"):
        overlay_heatmap(Image.new("RGB", (64, 64)), np.zeros((2, 32, 32)), pp)


def test_crop_coverage():
    resize = Preprocessing(input_size=(3, 32, 32), crop_protocol="resize", num_test_crops=1)
    one = Preprocessing(input_size=(3, 32, 32), num_test_crops=1)
    assert crop_coverage(Image.new("RGB", (640, 640)), resize) == 1.0
    assert crop_coverage(Image.new("RGB", (64, 64)), one) == pytest.approx(0.25)
    assert crop_coverage(Image.new("RGB", (16, 16)), one) == 1.0   # enlarged to the crop first


def test_explain_image_returns_heatmaps_and_overlay_of_the_image():
    pp = Preprocessing(input_size=(3, 64, 64), num_test_crops=5)
    detector = Detector(create_detector("mobilenetv2_100", preprocessing=pp))
    image = Image.new("RGB", (100, 80), (200, 100, 50))
    heatmap, overlay = explain_image(detector, image)
    assert heatmap.shape == (5, 64, 64)
    assert overlay.size == image.size and overlay.mode == "RGB"
