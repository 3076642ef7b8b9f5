"""Export a saved release's fast path again, as train.py does at the end of a run.

    python scripts/export_fast_path.py --model runs/faces-dev-panel --dataset runs/faces-dev-dataset

The int8 graph ships when it keeps the AUC within budget on the dataset's test split; otherwise the exported fp32
graph does, which serves without torch and scores as the torch model does. For a release trained before fp32
graphs shipped, or after a change to the exporter.
"""
from __future__ import annotations

import argparse
import json
import sys

from fakeface.data.dataset import DatasetLoadError
from fakeface.modeling.detector import DetectorLoadError
from fakeface.training.release import reexport_fast_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="release folder written by train.py (or build_panel.py)")
    p.add_argument("--dataset", required=True, help="the dataset it was trained on (validation and test splits)")
    args = p.parse_args(argv)
    try:
        info = reexport_fast_path(args.model, args.dataset)
    except (DetectorLoadError, DatasetLoadError) as error:
        print(f"scripts/export_fast_path.py: {error}", file=sys.stderr)
        return 2
    if not info or "error" in info:
        print(f"scripts/export_fast_path.py: the export failed: {(info or {}).get('error')}", file=sys.stderr)
        return 1
    shown = {k: info.get(k) for k in ("precision", "file", "auc_drop", "budget_auc", "within_budget")}
    # compare_detectors names the candidate's figures "int8" whatever the graph's precision
    shown.update(ms_per_image_torch=info.get("ms_per_image_fp32"), ms_per_image_graph=info.get("ms_per_image_int8"))
    print(json.dumps(shown, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
