"""Write tests/data/pinned_release/: a tiny trained, calibrated release and its outputs on fixed inputs.

Run once, with the code whose behaviour is to be pinned (it was run before the
issue-13 refactor); ``tests/test_pinned_release.py`` then proves later code
loads the same files and gives the same logits, p(fake) and verdicts.

    .venv/bin/python -m tests.make_pinned_release
"""
from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_training import TINY, image_bytes, make_tiny_dataset

PINNED = Path(__file__).resolve().parent / "data" / "pinned_release"
RELEASE_FILES = ("config.json", "model.safetensors")


def write_inputs(folder: Path) -> list[str]:
    """Fixed PNG inputs: the training distribution at 48 px plus odd sizes and modes (crop/resize paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    names = []
    for i in range(6):
        name = f"tiny_{'fake' if i % 2 else 'real'}_{i}.png"
        (folder / name).write_bytes(image_bytes(rng, bool(i % 2)))
        names.append(name)
    odd = {
        "wide_80x48.png": Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)),
        "small_24x24.png": Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)),
        "gray_64x64.png": Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8), mode="L"),
    }
    for name, image in odd.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        (folder / name).write_bytes(buffer.getvalue())
        names.append(name)
    return names


def main() -> None:
    from fakeface.modeling.detector import load_detector
    from fakeface.modeling.inference import Detector
    from fakeface.training.loop import TrainingConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "release"
        train(TrainingConfig(dataset=make_tiny_dataset(), output_dir=str(output), checkpoint_every=0,
                             **TINY))
        if PINNED.exists():
            shutil.rmtree(PINNED)
        PINNED.mkdir(parents=True)
        for name in RELEASE_FILES:
            shutil.copy2(output / name, PINNED / name)
    names = write_inputs(PINNED / "inputs")
    detector = Detector(load_detector(PINNED))
    images = [Image.open(PINNED / "inputs" / name).convert("RGB") for name in names]
    scores = detector.score(images)
    expected = {
        "inputs": names,
        "logits": scores.logits.tolist(),
        "p_fake": scores.p_fake.tolist(),
        "verdicts": list(scores.verdicts),
    }
    (PINNED / "expected_outputs.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected, indent=2))


if __name__ == "__main__":
    main()
