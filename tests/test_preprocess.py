"""The single preprocessing definition: what it does to pixels, and that it round-trips through the config."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.data.preprocess import (
    Augmentation,
    Preprocessing,
    build_eval_transform,
    build_train_transform,
    eval_crop_origins,
    resolve_preprocessing,
)


def _image(h, w, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _denormalize(t, pp):
    mean = torch.tensor(pp.mean).view(3, 1, 1)
    std = torch.tensor(pp.std).view(3, 1, 1)
    return (t * std + mean).mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def test_native_crops_keep_the_original_pixels():
    """No resampling: each crop is a verbatim window of the image (the fingerprint survives)."""
    pp = Preprocessing(input_size=(3, 32, 32), num_test_crops=5)
    image = _image(80, 100)
    crops = build_eval_transform(pp)(image)
    assert crops.shape == (5, 3, 32, 32)
    arr = np.asarray(image)
    for crop, (y, x) in zip(crops, eval_crop_origins(80, 100, pp)):
        np.testing.assert_array_equal(_denormalize(crop, pp), arr[y:y + 32, x:x + 32])
    # centre first, then the four corners
    assert eval_crop_origins(80, 100, pp) == [(24, 34), (0, 0), (0, 68), (48, 0), (48, 68)]


def test_nine_crops_cover_a_grid_with_the_centre_first():
    pp = Preprocessing(input_size=(3, 32, 32), num_test_crops=9)
    origins = eval_crop_origins(96, 96, pp)
    assert origins[0] == (32, 32) and len(set(origins)) == 9


def test_small_images_are_enlarged_not_padded():
    pp = Preprocessing(input_size=(3, 64, 64), num_test_crops=5)
    crops = build_eval_transform(pp)(_image(40, 50))
    assert crops.shape == (5, 3, 64, 64)


def test_resize_protocol_squashes_the_whole_image():
    pp = Preprocessing(input_size=(3, 48, 48), crop_protocol="resize", num_test_crops=5)
    assert pp.crops_per_image == 1
    image = _image(100, 60)
    out = build_eval_transform(pp)(image)
    assert out.shape == (1, 3, 48, 48)
    expected = np.asarray(image.resize((48, 48), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(_denormalize(out[0], pp), expected)


def test_eval_transform_is_deterministic_and_train_transform_is_seeded():
    pp = Preprocessing(input_size=(3, 32, 32))
    image = _image(64, 64)
    torch.testing.assert_close(build_eval_transform(pp)(image), build_eval_transform(pp)(image))
    aug = Augmentation.robust()
    a = build_train_transform(pp, aug, rng=random.Random(5))(image)
    b = build_train_transform(pp, aug, rng=random.Random(5))(image)
    c = build_train_transform(pp, aug, rng=random.Random(6))(image)
    assert a.shape == (3, 32, 32)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_train_crops_are_native_windows_without_augmentation():
    pp = Preprocessing(input_size=(3, 16, 16))
    image = _image(40, 40, seed=3)
    arr = np.asarray(image)
    crop = _denormalize(build_train_transform(pp, Augmentation.none(), rng=random.Random(0))(image), pp)
    windows = [arr[y:y + 16, x:x + 16] for y in range(25) for x in range(25)]
    assert any(np.array_equal(crop, w) for w in windows)


def test_preprocessing_round_trips_through_config_and_model():
    from fakeface.modeling.detector import create_detector

    pp = Preprocessing(input_size=(3, 96, 96), interpolation="bilinear", crop_protocol="resize", num_test_crops=1)
    model = create_detector("mobilenetv2_100", preprocessing=pp)
    assert resolve_preprocessing(model) == pp
    config = {"pretrained_cfg": pp.to_pretrained_cfg(), "fakeface": pp.to_fakeface_cfg()}
    assert resolve_preprocessing(config) == pp


@pytest.mark.parametrize("bad", [dict(crop_protocol="zoom"), dict(num_test_crops=4), dict(interpolation="magic")])
def test_invalid_preprocessing_is_rejected(bad):
    with pytest.raises(ValueError):
        Preprocessing(**bad)
