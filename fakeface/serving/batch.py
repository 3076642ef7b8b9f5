"""Many uploaded files -> flat rows, and their CSV (formula-like cells neutralised).

Each file gives one ``photo`` row (its verdict, as :func:`analyze_bytes`
gives it: from its most suspicious face, or from the whole image; ``faces``
counts the faces found, ``mode`` says which) followed by one ``face N`` row per
face found, with that face's box (``x0, y0, x1, y1``, photo pixels), its own
``p_fake``/``verdict`` (empty and ``too small`` for a face too small to judge)
and its flags. The ``row`` column tells them apart; a file that cannot be
read gets one ``photo`` row with ``verdict`` "error".
"""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from fakeface.data.images import ImageDecodeError
from fakeface.serving.analysis import analyze_bytes, display_name, read_upload, require_models
from fakeface.serving.errors import AppError
from fakeface.serving.models import LoadedModel

logger = logging.getLogger(__name__)

__all__ = ["BATCH_COLUMNS", "MAX_BATCH_FILES", "PHOTO_ROW", "TOO_SMALL", "analyze_files", "batch_columns",
           "batch_row", "batch_rows", "write_rows_csv"]

MAX_BATCH_FILES = 100
PHOTO_ROW = "photo"
TOO_SMALL = "too small"          # a face row's verdict when the face is too small to judge
BATCH_COLUMNS = ("file", "verdict", "p_fake", "model", "reason", "row", "faces", "mode", "x0", "y0", "x1", "y1", "too_small",
                 "cut_by_border", "agreement", "format", "width", "height", "jpeg_quality", "c2pa", "notes",
                 "warnings", "error")


def batch_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The photo row from :func:`analyze_bytes`' result (plus one p_fake column per extra model)."""
    image = result.get("image") or {}
    prov = result.get("provenance") or {}
    row = {
        "file": result["file"], "verdict": result["verdict"], "p_fake": round(result["p_fake"], 4),
        "reason": result.get("reason") or "", "model": result["model"], "row": PHOTO_ROW, "faces": len(result.get("faces") or []),
        "mode": result.get("mode", ""), "agreement": "yes" if result["agreement"] else "no",
        "format": image.get("format"), "width": image.get("width"), "height": image.get("height"),
        "jpeg_quality": image.get("jpeg_quality"), "c2pa": (prov.get("c2pa") or {}).get("status", ""),
        "notes": " | ".join(result.get("notes") or []), "warnings": " | ".join(result.get("warnings") or []),
        "error": "",
    }
    for extra in result["models"][1:]:
        row[f"p_fake [{extra['model']}]"] = round(extra["p_fake"], 4)
    row.update(_expert_cells(result))
    return row


def _expert_cells(result: Mapping[str, Any]) -> dict[str, Any]:
    """A panel release's columns: each expert's p(fake) (``p_fake [expert: name]``) and the evidence sentence."""
    experts = result.get("experts")
    if not experts:
        return {}
    return {**{f"p_fake [expert: {name}]": round(p, 4) for name, p in experts.items()},
            "evidence": result.get("evidence") or ""}


def _face_row(file: str, model: str, face: Mapping[str, Any]) -> dict[str, Any]:
    x0, y0, x1, y1 = face["box"]
    p = face.get("p_fake")
    return {"file": file, "verdict": TOO_SMALL if face["too_small"] else face["verdict"],
            "p_fake": "" if p is None else round(p, 4), "reason": face.get("reason") or "", "model": model,
            "row": f"face {face['face']}",
            "x0": x0, "y0": y0, "x1": x1, "y1": y1, "too_small": face["too_small"],
            "cut_by_border": face["cut_by_border"], "error": "", **_expert_cells(face)}


def batch_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The photo row, then one row per face found (see the module docstring)."""
    return [batch_row(result)] + [_face_row(result["file"], result["model"], face)
                                  for face in result.get("faces") or []]


def analyze_files(
    files: Sequence[str | os.PathLike],
    models: Sequence[LoadedModel],
    *,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Score many uploaded files: a photo row each plus its face rows; a bad file gets an ``error`` and the rest go on."""
    require_models(models)
    if len(files) > MAX_BATCH_FILES:
        raise AppError(f"Too many files: {len(files)};", f"at most {MAX_BATCH_FILES} per batch.", kind="too_large")
    rows = []
    for index, path in enumerate(files):
        name = display_name(path)
        if progress is not None:
            progress(index, len(files), name)
        try:
            result = analyze_bytes(read_upload(path), name, models, explain=False, robustness=False)
            rows.extend(batch_rows(result))
        except (ImageDecodeError, AppError) as error:
            rows.append({"file": name, "row": PHOTO_ROW, "verdict": "error", "error": str(error)})
        except Exception as error:  # noqa: BLE001 - one bad file must not lose the batch
            logger.exception("batch: unexpected failure on one file")
            rows.append({"file": name, "row": PHOTO_ROW, "verdict": "error",
                         "error": f"unexpected {type(error).__name__}"})
    return rows


def batch_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The table's columns: the fixed ones, then any per-model columns in first-seen order."""
    extra = [k for row in rows for k in row if k not in BATCH_COLUMNS]
    return list(BATCH_COLUMNS[:4]) + list(dict.fromkeys(extra)) + list(BATCH_COLUMNS[4:])


def _csv_safe(value: Any) -> Any:
    # A cell starting with = + - @ is run as a formula by spreadsheet apps;
    # file names and warnings come from users (CSV injection).
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write batch rows as CSV (UTF-8, header row, formula-like cells neutralised)."""
    path = Path(path)
    columns = batch_columns(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: _csv_safe(row.get(c)) for c in columns})
    return path
