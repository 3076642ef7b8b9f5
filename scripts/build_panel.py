"""Make a trained content release a panel release: trace expert + fitted fusion + measured band.

    python scripts/build_panel.py --content runs/faces-dev-finetune --trace .cache/panel/trace-expert \
        --entry results/panel_release.json --output runs/faces-dev-panel
"""
from __future__ import annotations

import argparse
import sys

from fakeface.data.dataset import DatasetLoadError
from fakeface.modeling.detector import DetectorLoadError
from fakeface.training.panel import PanelEntryError, build_panel_release, build_validation_panel, pair_images


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--content", required=True, help="release folder written by train.py (the content expert)")
    p.add_argument("--trace", default=".cache/panel/trace-expert", help="trace expert folder (the panel benchmark's)")
    p.add_argument("--entry", default="results/panel_release.json", help="fusion, temperatures and band")
    p.add_argument("--output", required=True, help="the panel release folder (replaced)")
    p.add_argument("--fit-on-validation", metavar="DATASET", default=None,
                   help="no panel benchmark: train the trace expert on DATASET's train reals and fit the fusion and "
                        "band on its validation split (the demo; your own folders)")
    p.add_argument("--fast-path-windows", default=".cache/panel/windows",
                   help="real face windows (the panel benchmark's) to calibrate and check the trace expert's int8 "
                        "graph on, against their re-upsampled twins; '' for no int8 graph")
    args = p.parse_args(argv)
    try:
        if args.fit_on_validation:
            out = build_validation_panel(args.content, args.fit_on_validation, args.output)
        else:
            images = pair_images(args.fast_path_windows) if args.fast_path_windows else None
            out = build_panel_release(args.content, args.trace, args.entry, args.output, fast_path_images=images)
    except (PanelEntryError, DetectorLoadError, DatasetLoadError) as error:
        print(f"scripts/build_panel.py: {error}", file=sys.stderr)
        return 2
    print(f"panel release in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
