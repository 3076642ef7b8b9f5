"""The About tab without the UI: what a release says about itself (card, measured metrics, data)."""
from __future__ import annotations

import json
import logging
import re
from typing import Any

from huggingface_hub import ModelCard

from fakeface.serving.models import LoadedModel

logger = logging.getLogger(__name__)

__all__ = ["describe_release"]


def _read_eval_results(model: LoadedModel) -> dict[str, Any]:
    path = model.folder / "eval_results.json"
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("eval_results.json of %s unreadable: %s", model.name, error)
        return {}
    config = (report.get("training") or {}).get("config") or {}
    return {"metrics": report.get("overall"), "n_test": (report.get("overall") or {}).get("n"),
            "dataset": config.get("dataset"), "dataset_revision": config.get("dataset_revision"),
            "verdicts": report.get("verdicts")}


def _read_card(model: LoadedModel) -> str | None:
    path = model.folder / "README.md"
    if not path.is_file():
        return None
    # huggingface_hub's own parser strips the YAML front matter.
    text = ModelCard(path.read_text(encoding="utf-8", errors="replace"), ignore_metadata_errors=True).text
    # Plots are relative files of the release; the app cannot serve them inline.
    return re.sub(r"!\[[^\]]*\]\([^)]*\)", "", text).strip()


def describe_release(model: LoadedModel) -> dict[str, Any]:
    """The model card summary: training data, measured test metrics, scope, revisions, card text."""
    summary: dict[str, Any] = {"model": model.describe(), "metrics": None, "dataset": None,
                               "dataset_revision": None, "card": None, "n_test": None}
    if model.folder is None:
        return summary
    summary.update(_read_eval_results(model))
    summary["card"] = _read_card(model)
    return summary
