"""One preprocessing definition: training's validation, evaluate.py and the app feed the model the same tensor.

The saved model's config is the only input. Each path is run as its own code
runs it (training's lazy ``with_transform``, evaluation's split decoding, the
app's ``analyze_bytes``); the tensor that reaches the model is captured and
compared bit for bit.
"""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from fakeface.modeling import inference
from fakeface.modeling.detector import create_detector, load_detector, save_detector
from fakeface.data.preprocess import Preprocessing

CASES = [
    Preprocessing(input_size=(3, 48, 48), num_test_crops=5),
    Preprocessing(input_size=(3, 40, 40), crop_protocol="resize", num_test_crops=1, interpolation="bilinear"),
]


def _jpeg_bytes(seed=0, size=(90, 70)):
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


@pytest.fixture
def capture_model_inputs(monkeypatch):
    """Record every crops tensor that reaches a detector's forward pass."""
    seen = []
    original = inference.logits_from_crops

    def recording(model, crops):
        seen.append(crops.detach().clone())
        return original(model, crops)

    monkeypatch.setattr(inference, "logits_from_crops", recording)
    return seen


@pytest.mark.parametrize("pp", CASES, ids=["native-crops", "resize"])
def test_training_evaluation_and_app_feed_the_model_the_same_tensor(pp, tmp_path, capture_model_inputs):
    from datasets import ClassLabel, Dataset, Features, Image as ImageFeature, Value

    from fakeface.evaluation.metrics import decode_split
    from fakeface.serving.analysis import analyze_bytes
    from fakeface.serving.models import load_model
    from fakeface.training.data import EvalTransform, prepare_split

    folder = save_detector(create_detector("mobilenetv2_050", preprocessing=pp), tmp_path / "model")
    model = load_detector(str(folder))
    data = _jpeg_bytes()

    # Training's validation: the dataset's lazy transform, built from the loaded model's config.
    split = Dataset.from_dict(
        {"image": [{"bytes": data, "path": None}], "label": [1], "generator": ["x"]},
        features=Features({"image": ImageFeature(), "label": ClassLabel(names=["real", "fake"]),
                           "generator": Value("string")}),
    )
    from fakeface.data.preprocess import resolve_preprocessing

    training_input = prepare_split(split, EvalTransform(resolve_preprocessing(model)))[0]["pixel_values"]

    # evaluate.py: decode the split, score through Detector.
    images, labels, _ = decode_split(split)
    inference.Detector(model).logits(images)
    assert len(capture_model_inputs) == 1
    evaluation_input = capture_model_inputs[-1][0]

    # The app: original file bytes through analyze_bytes (fp32 scorer).
    loaded = load_model(str(folder), use_fast_path=False)
    analyze_bytes(data, "face.jpg", [loaded], explain=False, robustness=False, provenance=False)
    assert len(capture_model_inputs) == 2, "the app must score through the shared inference path"
    app_input = capture_model_inputs[-1][0]

    assert training_input.shape == (pp.crops_per_image, 3, *pp.crop_size)
    torch.testing.assert_close(evaluation_input, training_input, rtol=0, atol=0)
    torch.testing.assert_close(app_input, training_input, rtol=0, atol=0)
