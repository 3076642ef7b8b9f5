"""Write tests/data/int8_release/: a tiny trained release with its int8 fast path, and labelled fixed inputs.

``tests/test_fastpath.py`` compares the int8 graph with fp32 on these files.
They are committed because a model trained inside the test is a different
model on every CPU: floating-point GEMMs round differently, the weights
drift apart over the training steps, and so does their int8 error (an EPYC
with AVX-512 VNNI trained a model whose worst image moved 0.18 in p(fake)
where this machine's moved less than 0.15). With the weights, the int8 graph
and the inputs fixed, the serving CPU contributes only what the product
itself has to live with: its int8 and fp32 arithmetic on a shipped release,
which the load-time reference check measures.

The release: a ``mobilenetv2_050`` at 32 px (5 crops) trained for 40 steps on
48 px toy images ("fake" = noise upsampled 2x, "real" = blurred noise; see
``tests.helpers.toy_image``), so that its probabilities spread over (0, 1)
like a real detector's. A random-weight network would not do: its logits are
projections of random features, which int8 rounding moves arbitrarily. Its
temperature is fitted on validation images as ``train.py`` does; its
thresholds are a fixed 0.3 / 0.7 so that verdicts have two thresholds and an
uncertain band to agree on. The fast path is exported exactly as a release's
is, with the fixed inputs as its holdout, so ``fastpath.json`` records the
AUC drop and |Δp| measured on the very images the test scores.

Run with the code whose export is to be pinned, then commit the folder:

    .venv/bin/python -m tests.make_int8_release

It refuses to write a release without headroom under the tests' margins
(see ``check_headroom``): a marginal artefact would make those tests depend
on the CPU again.
"""
from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fakeface.data.preprocess import Augmentation, Preprocessing, build_train_transform
from fakeface.evaluation.calibration import fit_temperature
from fakeface.modeling.config import Decision
from fakeface.modeling.detector import create_detector, load_detector, save_detector, set_decision
from fakeface.modeling.fastpath import cpu_instruction_sets, export_fast_path, load_fast_path
from fakeface.modeling.inference import Detector
from tests.helpers import toy_images

INT8_RELEASE = Path(__file__).resolve().parent / "data" / "int8_release"
RELEASE_DIR = "release"            # config.json, model.safetensors, model.int8.onnx, fastpath.json + reference
INPUTS_NAME = "inputs.npz"         # pixels (N, 48, 48, 3) uint8, labels (N,): the export's holdout
EXPECTED_NAME = "expected_outputs.json"
ARCH = "mobilenetv2_050"
PREPROCESSING = Preprocessing(input_size=(3, 32, 32), num_test_crops=5)
THRESHOLD_REAL, THRESHOLD_FAKE = 0.3, 0.7
TRAIN_SEED, CALIBRATION_SEED, INPUTS_SEED, VALIDATION_SEED = 0, 1, 2, 4


def train_tiny_detector(steps: int = 40) -> torch.nn.Module:
    """The tiny detector: a few dozen AdamW steps from a zeroed head on toy images."""
    torch.manual_seed(TRAIN_SEED)
    images, labels = toy_images(TRAIN_SEED, 96)
    model = create_detector(ARCH, preprocessing=PREPROCESSING)
    head = model.get_classifier()
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    transform = build_train_transform(PREPROCESSING, Augmentation(), rng=random.Random(TRAIN_SEED))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        rows = np.random.default_rng(step).choice(len(images), 16, replace=False)
        x = torch.stack([transform(images[i]) for i in rows])
        loss = torch.nn.functional.cross_entropy(model(x), torch.as_tensor(labels[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def load_inputs(folder: Path = INT8_RELEASE) -> tuple[list[Image.Image], np.ndarray]:
    """The committed fixed inputs, decoded as the export saw them, and their labels (1 = fake)."""
    with np.load(folder / INPUTS_NAME, allow_pickle=False) as data:
        pixels, labels = data["pixels"], data["labels"]
    return [Image.fromarray(p) for p in pixels], labels


def check_headroom(info: dict, export_reference_dp: float, p_fake_fp32: np.ndarray, p_fake_int8: np.ndarray) -> None:
    """What the tests assume of the artefact, with room to spare for another CPU's rounding.

    On a fixed int8 graph another x86 CPU changes little: the u8 x s8 products
    are summed exactly in int32 on every path (VNNI, AMX, and AVX2, where the
    7-bit weights cannot saturate), so only fp32 rounding in the requantization
    scales and the fp32 ops (the crop mean, an fp32 input convolution) differs.
    The room asked for here is a quarter of the reference tolerance in p(fake).
    """
    tolerance = info["reference"]["tolerance_abs_dp"]
    room = tolerance / 4
    problems = []
    if info["within_budget"] is not True or info["auc_drop"] > info["budget_auc"] / 2:
        problems.append(f"AUC drop {info['auc_drop']} is not within half the budget {info['budget_auc']}")
    if info["auc_fp32"] < 0.9:
        problems.append(f"fp32 AUC {info['auc_fp32']:.3f}: the detector did not learn")
    if export_reference_dp > tolerance - room:
        problems.append(f"the reference inputs moved {export_reference_dp:.3f} at export (tolerance {tolerance})")
    distance = np.minimum(abs(p_fake_fp32 - THRESHOLD_REAL), abs(p_fake_fp32 - THRESHOLD_FAKE))
    clear = distance > tolerance
    if clear.mean() < 0.5:
        problems.append(f"only {clear.sum()} of {len(clear)} inputs are further than {tolerance} from a threshold")
    elif (distance - abs(p_fake_int8 - p_fake_fp32))[clear].min() < room:
        problems.append("an input clear of the thresholds comes within "
                        f"{(distance - abs(p_fake_int8 - p_fake_fp32))[clear].min():.3f} of changing its verdict")
    if problems:
        raise SystemExit("not written: " + "; ".join(problems))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        release = Path(tmp) / RELEASE_DIR
        model = train_tiny_detector()
        validation, validation_labels = toy_images(VALIDATION_SEED, 64)
        temperature = fit_temperature(Detector(model).logits(validation), validation_labels)
        set_decision(model, Decision(temperature=temperature, threshold_real=THRESHOLD_REAL,
                                     threshold_fake=THRESHOLD_FAKE, calibrated=True))
        save_detector(model, release)
        model = load_detector(release)
        calibration, _ = toy_images(CALIBRATION_SEED, 32)
        inputs, labels = toy_images(INPUTS_SEED, 64)
        info = export_fast_path(model, release, calibration, inputs, labels)
        loaded = load_fast_path(release)
        if loaded.detector is None:
            raise SystemExit(f"not written: {loaded.refusal.message}")
        fp32, int8 = Detector(model).score(inputs), loaded.detector.score(inputs)
        check_headroom(info, loaded.check.export_max_abs_dp, fp32.p_fake, int8.p_fake)
        if INT8_RELEASE.exists():
            shutil.rmtree(INT8_RELEASE)
        INT8_RELEASE.mkdir(parents=True)
        shutil.copytree(release, INT8_RELEASE / RELEASE_DIR)
    np.savez_compressed(INT8_RELEASE / INPUTS_NAME, pixels=np.stack([np.asarray(i) for i in inputs]),
                        labels=np.asarray(labels))
    # For diagnosis only (the tests do not compare with them: another CPU rounds differently).
    expected = {
        "made_on_cpu": list(cpu_instruction_sets()),
        "p_fake_fp32": fp32.p_fake.tolist(),
        "p_fake_int8": int8.p_fake.tolist(),
        "verdicts_fp32": list(fp32.verdicts),
        "verdicts_int8": list(int8.verdicts),
    }
    (INT8_RELEASE / EXPECTED_NAME).write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps({k: info[k] for k in ("auc_fp32", "auc_int8", "auc_drop", "max_abs_dp", "mean_abs_dp",
                                            "verdict_agreement", "input_conv")}, indent=2))


if __name__ == "__main__":
    main()
