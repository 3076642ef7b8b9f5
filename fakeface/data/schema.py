"""The face dataset's schema and the names of a built dataset folder's files (shared by build, load and push)."""
from __future__ import annotations

from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES

REPORT_NAME = "build_report.json"
CARD_NAME = "README.md"
DATA_DIR = "data"
REPORT_FORMAT = "fakeface-dataset/1"       # marks a folder as ours: only such folders are ever replaced


def build_features():
    """The schema every split has (``datasets.Features``); attribute columns are null when unknown."""
    from datasets import ClassLabel, Features, Image, Value

    return Features({
        "image": Image(),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "generator": Value("string"),
        "source_id": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "format": Value("string"),
        **{column: Value("string") for column in ATTRIBUTE_COLUMNS},
    })
