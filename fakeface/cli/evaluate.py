"""Evaluate a detector on a dataset split: metrics, per generator/attribute, robustness, plots.

    fakeface-evaluate --model ID_OR_DIR --dataset ID_OR_DIR --split test --output-dir DIR

Writes ``DIR/eval_results.json``, ``DIR/eval_results.md`` (the card's tables)
and ``DIR/plots/*.png``. Scoring goes through ``fakeface.modeling.inference.Detector``
with the model's own preprocessing, temperature and thresholds, exactly as
the app does. ``--recalibrate validation`` refits temperature and thresholds
on another split first and saves the recalibrated model into DIR.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from fakeface.cli.common import add_split_arguments
from fakeface.data.dataset import load_face_dataset
from fakeface.evaluation.calibration import calibrate
from fakeface.evaluation.metrics import decode_split, evaluate_detector, json_safe
from fakeface.evaluation.plots import save_report_figures
from fakeface.modeling.detector import DetectorLoadError, load_detector, save_detector, set_decision
from fakeface.modeling.fastpath import load_fast_detector
from fakeface.modeling.inference import Detector
from fakeface.training.card import build_card_tables


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_split_arguments(p)
    p.add_argument("--no-robustness", action="store_true")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--fast-path", action="store_true", help="score with the ONNX fast path (int8, or fp32 where int8 missed its budget) if the model has one")
    p.add_argument("--recalibrate", metavar="SPLIT", default=None,
                   help="refit temperature and thresholds on SPLIT first (saves the model into --output-dir)")
    p.add_argument("--target-fpr", type=float, default=0.05, help="with --recalibrate")
    p.add_argument("--seed", type=int, default=0, help="for the 2-D embedding plot")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    output_dir = Path(args.output_dir)
    try:
        model = load_detector(args.model)
        data = load_face_dataset(args.dataset)
        if args.split not in data:
            raise ValueError(f"split {args.split!r} not in the dataset (it has {', '.join(data)})")
        if args.recalibrate:
            if args.recalibrate not in data:
                raise ValueError(f"split {args.recalibrate!r} not in the dataset (it has {', '.join(data)})")
            images, labels, _ = decode_split(data[args.recalibrate], max_images=args.limit)
            logits = Detector(model).score_batches(images, args.batch_size).logits
            decision = calibrate(logits, labels, target_fpr=args.target_fpr)
            set_decision(model, decision)
            save_detector(model, output_dir)
            logging.info("recalibrated on %s: temperature %.3f, threshold_fake %.4f", args.recalibrate,
                         decision.temperature, decision.threshold_fake)
    except (DetectorLoadError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    detector = Detector(model)
    if args.fast_path:
        fast = load_fast_detector(model.fakeface_files.folder if not args.recalibrate else output_dir)
        if fast is None:
            print("error: the model has no usable ONNX fast path (see the log above)", file=sys.stderr)
            return 2
        detector = fast
    decoded = decode_split(data[args.split], max_images=args.limit)
    report = evaluate_detector(detector, data[args.split], batch_size=args.batch_size,
                               robustness=not args.no_robustness, decoded=decoded)
    report["model"] = {"source": str(model.fakeface_files.source.display), "revision": model.fakeface_files.revision}
    report["split"] = args.split
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_results.json").write_text(json.dumps(json_safe(report), indent=2) + "\n")
    tables = build_card_tables(report)
    markdown = [f"# Evaluation of {report['model']['source']} on {args.split} ({report['n']} images)", "",
                tables["overall_table"], "", "## Per generator", "", tables["generator_table"], "",
                "## Per attribute", "", tables["attribute_tables"], "", "## Robustness", "", tables["robustness_table"], ""]
    (output_dir / "eval_results.md").write_text("\n".join(markdown))
    if not args.no_plots:
        save_report_figures(report, output_dir / "plots", detector=detector, images=decoded[0], seed=args.seed)
    overall = report["overall"]
    print(f"{args.split}: n={overall['n']} ROC-AUC {overall['roc_auc']:.4f} AP {overall['average_precision']:.4f} "
          f"accuracy {overall['accuracy']:.4f} ECE {overall['ece']:.4f} -> {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
