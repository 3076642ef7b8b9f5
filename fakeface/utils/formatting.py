"""Small helpers every report shares: JSON-safe values, number-or-dash cells and Markdown tables."""
from __future__ import annotations

import math
from pathlib import PurePath
from typing import Any, Mapping, Sequence

import numpy as np

MISSING = "—"


def json_safe(value: Any, *, digits: int | None = None) -> Any:
    """NaN/inf -> None, numpy scalars/arrays -> Python types, paths -> their name (never a local path).

    ``digits`` rounds floats (for results files that should not carry noise digits).
    """
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, digits=digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, digits=digits) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist(), digits=digits)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, PurePath):
        return value.name
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return round(value, digits) if digits is not None else value
    return value


def format_number(value: Any, digits: int = 4, *, missing: str = MISSING) -> str:
    """Table cell text: numbers rounded, missing/NaN as ``missing`` (an em dash)."""
    if value is None:
        return missing
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return missing if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table (numbers via :func:`format_number`, pipes in cells escaped)."""
    def cell(value: Any) -> str:
        return format_number(value, digits).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
