"""CPU inference benchmark: plain timm baseline vs the app's fp32 and int8 serving paths.

    python scripts/benchmark.py                       # full run, random weights (speed only)
    python scripts/benchmark.py --models mobilenetv2_100=demo_model --dataset demo_data   # + cold start, accuracy
                                                                                          # of a trained release
    python scripts/benchmark.py --train-releases      # the committed results: + small trained releases
    python scripts/benchmark.py --quick               # smoke run (seconds)

Writes ``results/benchmark.json`` and ``results/benchmark.md`` (or the paths
given) and prints the environment first. All logic is in
``benchmarks.inference``; see ``docs/performance.md`` for how to read it.
"""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path


def _csv_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _models(text: str) -> dict[str, str]:
    models = {}
    for item in filter(None, (v.strip() for v in text.split(","))):
        arch, sep, folder = item.partition("=")
        if not sep or not arch or not folder:
            raise argparse.ArgumentTypeError(f"--models takes ARCH=FOLDER[,ARCH=FOLDER], got {item!r}")
        if not Path(folder).is_dir():
            raise argparse.ArgumentTypeError(f"--models: {folder} is not a folder")
        models[arch] = folder
    return models


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run (one small model, small images)")
    p.add_argument("--architectures", default=None, help="comma-separated timm names (default: resnet50,mobilenetv2_100)")
    p.add_argument("--threads", type=_csv_ints, default=None, help="thread counts, e.g. 1,2")
    p.add_argument("--batches", type=_csv_ints, default=None, help="batch sizes, e.g. 1,8")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per group")
    p.add_argument("--models", type=_models, default={},
                   help="trained releases ARCH=FOLDER,...: cold start through the app's loader and int8 accuracy")
    p.add_argument("--dataset", action="append", default=[], metavar="DIR_OR_ID[:SPLIT]",
                   help="labelled face dataset re-measuring the releases' int8 accuracy (split: test by default, "
                        "'all' for every split); repeatable")
    p.add_argument("--train-releases", action="store_true",
                   help="build the synthetic datasets and train small releases in --work-dir (cached; tens of "
                        "minutes on 2 cores the first time), then benchmark them as with --models/--dataset")
    p.add_argument("--accuracy-max-images", type=int, default=None)
    p.add_argument("--cold-start-runs", type=int, default=None)
    p.add_argument("--work-dir", default=None,
                   help="keep exported graphs (and --train-releases' data and models) here; default: a temporary "
                        "folder, or runs/benchmark with --train-releases")
    p.add_argument("--output", default="results/benchmark", help="writes OUTPUT.json and OUTPUT.md")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("onnx_ir", "onnxscript", "onnxruntime", "torch.onnx", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from benchmarks.inference import DEFAULT_ARCHITECTURES, BenchmarkConfig, run_benchmark
    from benchmarks.inference_report import write_benchmark_results
    from benchmarks.measure import collect_environment, prepare_trained_releases

    print(json.dumps(collect_environment(), indent=2))
    if args.train_releases:
        args.work_dir = args.work_dir or "runs/benchmark"
        architectures = tuple(a.strip() for a in args.architectures.split(",")) if args.architectures else DEFAULT_ARCHITECTURES
        models, datasets = prepare_trained_releases(Path(args.work_dir) / "releases", architectures)
        args.models = {**models, **args.models}
        args.dataset = list(args.dataset) or list(datasets)
    overrides = {k: v for k, v in dict(
        architectures=tuple(a.strip() for a in args.architectures.split(",")) if args.architectures else None,
        threads=args.threads, batches=args.batches, rounds=args.rounds, cold_start_runs=args.cold_start_runs,
    ).items() if v is not None}
    overrides.update(models=args.models, datasets=tuple(args.dataset), accuracy_max_images=args.accuracy_max_images,
                     work_dir=args.work_dir)
    config = BenchmarkConfig.quick_config(**overrides) if args.quick else BenchmarkConfig(**overrides)
    results = run_benchmark(config)
    command = "python scripts/benchmark.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    output = Path(args.output)
    write_benchmark_results(results, output.with_suffix(".json"), output.with_suffix(".md"), command=command.strip())
    for target in results["targets"]:
        print(f"{'MET ' if target['met'] else 'MISS'} {target['target']}: {target['measured']} ({target['limit']})")
    print(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
