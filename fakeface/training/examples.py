"""Example photos a release carries, so the Space shows visitors photos that fit the model.

A model trained on real faces should be tried on real photos, not on the
synthetic stand-ins that ship with the app for the synthetic demo model. So
the release takes a few images of its own **test split** (never seen in
training or calibration), their original bytes, and writes them to
``examples/`` with a README that names each image's label and source and the
dataset's licence. The app shows them (``fakeface.serving.examples``). A model
trained on the synthetic set carries none: the app's own stand-ins serve it.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fakeface.utils.constants import FAKE, LABEL_NAMES, SYNTHETIC_GENERATOR
from fakeface.utils.fileio import write_atomic

logger = logging.getLogger(__name__)

__all__ = ["EXAMPLES_DIR", "EXAMPLES_README", "write_release_examples"]

EXAMPLES_DIR = "examples"
EXAMPLES_README = "README.md"
_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def _dataset_license(dataset: str | None) -> str:
    """The dataset card's licence, in words; "unstated" when the card cannot be read."""
    if not dataset:
        return "unstated"
    try:
        from huggingface_hub import DatasetCard

        path = Path(dataset) / "README.md"
        card = DatasetCard.load(path if path.is_file() else dataset)
        return str(card.data.get("license") or "unstated")
    except Exception as error:  # noqa: BLE001 - a card that cannot be read must not fail the release
        logger.info("dataset card of %s unreadable (%s): examples' licence left unstated", dataset, error)
        return "unstated"


def _pick(split: Any, per_label: int) -> list[int]:
    """Rows to show: per label, the first ``per_label`` images of distinct sources (split order is fixed)."""
    chosen, seen = [], set()
    for label in (1 - FAKE, FAKE):
        taken = 0
        for row, (row_label, source) in enumerate(zip(split["label"], split["generator"])):
            if taken >= per_label:
                break
            if row_label == label and (label, source) not in seen:
                seen.add((label, source))
                chosen.append(row)
                taken += 1
    return chosen


def write_release_examples(output_dir: str | Path, test_split: Any, *, dataset: str | None,
                           per_label: int = 2) -> list[dict[str, Any]]:
    """Copy up to ``per_label`` real and fake test images into ``output_dir/examples``; returns their rows.

    Nothing is written for a model trained on the synthetic set, or when the
    split has no ``generator`` column to say where each image came from.
    """
    if "generator" not in test_split.column_names or SYNTHETIC_GENERATOR in set(test_split["generator"]):
        return []
    from datasets import Image as ImageFeature  # heavy; only when writing a release

    raw = test_split.cast_column("image", ImageFeature(decode=False))
    folder = Path(output_dir) / EXAMPLES_DIR
    rows = []
    for n, row in enumerate(_pick(test_split, per_label), start=1):
        example = raw[row]
        label = LABEL_NAMES[example["label"]]
        name = f"{label}-{n}{_SUFFIX.get(str(example.get('format') or '').upper(), '.png')}"
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / name, example["image"]["bytes"])
        rows.append({"file": name, "label": label, "source": example["generator"], "id": example.get("source_id")})
    if rows:
        licence = _dataset_license(dataset)
        table = "\n".join(f"| {r['file']} | {r['label']} | {r['source']} | {r['id'] or ''} |" for r in rows)
        write_atomic(folder / EXAMPLES_README, (
            "# Example photos\n\n"
            f"Images from the **test split** of the training dataset `{dataset or 'unrecorded'}` (never used in "
            "training or calibration), as their original bytes, so visitors can try the model on photos like "
            f"those it was trained for.\n\n**Licence:** `{licence}`, the dataset's (see its card for each "
            "source's terms; real photos keep their subjects' and photographers' rights).\n\n"
            f"| file | label | source | id |\n|---|---|---|---|\n{table}\n"
        ).encode("utf-8"))
    return rows
