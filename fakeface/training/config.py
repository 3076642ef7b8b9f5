"""One definition of a training run's settings: :class:`TrainingConfig`, and the command line generated from it.

Each field's flag (name, help, choices, type) sits in the field's metadata, so
``fakeface-train`` / ``train.py`` and the config cannot drift apart: the
parser is built from the fields and maps back onto them one to one.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from fakeface.data.preprocess import Preprocessing
from fakeface.modeling.pretrained import OFFLINE_WEIGHTS, has_offline_weights, resolve_normalisation
from fakeface.training.card import describe_dataset
from fakeface.training.recipes import RECIPES, Recipe
from fakeface.utils.constants import DEFAULT_ARCHITECTURE


def _flag(default: Any = MISSING, help: str = "", *, flag: str | None = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a command-line flag (``flag``: the flag's name when not ``--field-name``).

    A bool field defaulting to False becomes ``store_true``; one defaulting to
    True needs ``flag`` (e.g. ``--no-plots``) and becomes ``store_false``.
    """
    return field(default=default, metadata={"help": help, "flag": flag, **argparse_kwargs})


def _tracker(text: str) -> str | None:
    return None if text in ("", "none") else text


@dataclass
class TrainingConfig:
    """Everything a run needs; the command line is generated from these fields (:func:`build_parser`)."""

    dataset: Any = _flag(help="Hub dataset id (org/name) or a local dataset folder (or, in code, a DatasetDict)",
                         required=True)
    output_dir: str = _flag(help="release folder; training state goes to OUTPUT_DIR/checkpoints", required=True)
    dataset_revision: str | None = _flag(None, "Hub dataset revision (branch, tag or commit)")
    model: str = _flag(DEFAULT_ARCHITECTURE, "timm architecture, e.g. resnet50, mobilenetv2_100")
    # The default is the recipe that generalised best to held-out generator families in the
    # real-faces benchmark (results/real_faces.md); robust is the synthetic set's recipe.
    recipe: str = _flag("finetune", "training recipe", choices=sorted(RECIPES))
    epochs: int = _flag(4)
    batch_size: int = _flag(16, "per process (small sets learn faster with more steps)")
    lr: float | None = _flag(None, "learning rate (default: the recipe's)", type=float)
    weight_decay: float | None = _flag(None, "(default: the recipe's)", type=float)
    input_size: int | None = _flag(None, "crop (native-crops recipes) or resize side, pixels (default: the "
                                         "recipe's: 112 for finetune, 224 for the others)", type=int)
    num_test_crops: int | None = _flag(None, "(default: the recipe's)", type=int, choices=(1, 5, 9))
    pretrained: bool = _flag(False, "start from pretrained weights (the default where a package carries them "
                                    f"offline: {', '.join(OFFLINE_WEIGHTS)}; other architectures fetch from "
                                    "the Hub and fail clearly offline)")
    pretrained_path: str | None = _flag(None, "local ImageNet weights file (works offline; the way to start resnet50 "
                                              "from ImageNet, since no package registry carries its weights)")
    mixed_precision: str = _flag("no", "", choices=("no", "bf16", "fp16"))
    gradient_accumulation_steps: int = _flag(1)
    channels_last: bool = _flag(False, "channels_last memory format (faster on GPUs)")
    resume: bool = _flag(False, "continue from the latest checkpoint in OUTPUT_DIR")
    push_to_hub: str | None = _flag(None, "upload the release in one commit", metavar="ORG/NAME")
    private: bool = _flag(False, "create the Hub repo private")
    seed: int = _flag(0)
    deterministic: bool = _flag(True, "allow non-deterministic kernels (faster on GPUs; the run is then not "
                                      "bit-reproducible)", flag="--non-deterministic")
    target_fpr: float = _flag(0.05, "false-positive rate for threshold_fake")
    confidently_wrong_target: float = _flag(0.05, "widen the uncertain band on validation until at most this share "
                                                  "of images gets a confident wrong verdict")
    abstention_band: str | None = _flag(None, "use this band instead (JSON: threshold_real, threshold_fake, source, "
                                              "confidently_wrong, coverage), e.g. measured on held-out generator "
                                              "families; validation is in-distribution", metavar="FILE")
    checkpoint_every: int = _flag(0, "also save_state every N optimizer steps (0: only each epoch)", metavar="N")
    keep_checkpoints: int = _flag(2)
    max_steps: int | None = _flag(None, "stop after N optimizer steps", type=int)
    limit_train: int | None = _flag(None, "train on N images only (after a seeded shuffle)", type=int, metavar="N")
    limit_eval: int | None = _flag(None, "validate/test on N images only", type=int, metavar="N")
    num_workers: int | None = _flag(None, "data loader worker processes (default: the cores beyond two, at most 4)",
                                    type=int)
    eval_batch_size: int | None = _flag(None, type=int)
    log_with: str | None = _flag("tensorboard", "accelerate tracker (tensorboard, ...) or 'none'", type=_tracker)
    log_every: int = 10                   # optimizer steps per logged window (not a flag)
    robustness: bool = _flag(True, "skip the robustness sweep", flag="--no-robustness")
    plots: bool = _flag(True, "skip the PNG plots", flag="--no-plots")
    fast_path: bool = _flag(True, "skip the int8 ONNX export", flag="--no-fast-path")
    cpu: bool = _flag(False, "train on CPU even if a GPU is present")
    face_crop: bool = _flag(True, "train and evaluate on whole images instead of the face stage's crops (by "
                                  "default each image becomes its largest face's crop, and the release finds faces "
                                  "itself in the app and scans)", flag="--no-face-crop")

    def resolved_recipe(self) -> Recipe:
        try:
            return RECIPES[self.recipe]
        except KeyError:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {sorted(RECIPES)}") from None

    def resolved_input_size(self) -> int:
        return self.input_size or self.resolved_recipe().input_size

    def validate(self) -> None:
        """Fail before any work is done, with the flag to fix in the message."""
        self.resolved_recipe()
        checks = [
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "--gradient-accumulation-steps must be >= 1"),
            (self.resolved_input_size() >= 16, "--input-size must be at least 16 pixels"),
            (self.mixed_precision in ("no", "bf16", "fp16"), "--mixed-precision must be no, bf16 or fp16"),
            (0.0 <= self.target_fpr < 1.0, "--target-fpr must be in [0, 1)"),
            (0.0 <= self.confidently_wrong_target < 1.0, "--confidently-wrong-target must be in [0, 1)"),
            (self.checkpoint_every >= 0, "--checkpoint-every must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
            (self.lr is None or self.lr > 0, "--lr must be positive"),
            (self.num_workers is None or self.num_workers >= 0, "--num-workers must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.push_to_hub is not None and self.push_to_hub.count("/") != 1:
            raise ValueError(f"--push-to-hub needs ORG/NAME, got {self.push_to_hub!r}")
        if self.abstention_band is not None:   # read now, not after hours of training
            from fakeface.evaluation.abstention import load_abstention_band

            load_abstention_band(self.abstention_band)

    def build_preprocessing(self) -> Preprocessing:
        recipe = self.resolved_recipe()
        # normalised as the starting weights expect (EfficientNet-Lite: mean = std = 0.5)
        mean, std = resolve_normalisation(self.model, self.pretrained, self.pretrained_path)
        return Preprocessing(
            input_size=(3, self.resolved_input_size(), self.resolved_input_size()),
            mean=mean, std=std,
            crop_protocol=recipe.crop_protocol,
            num_test_crops=self.num_test_crops or recipe.num_test_crops,
        )

    def public_dict(self) -> dict[str, Any]:
        """The settings as published in the card and eval json: no local paths, no objects."""
        # Not asdict(): it would deep-copy an in-memory DatasetDict.
        private = ("dataset", "output_dir", "pretrained_path", "abstention_band")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in private}
        data["dataset"] = describe_dataset(self.dataset)[0]
        data["pretrained_path"] = Path(self.pretrained_path).name if self.pretrained_path else None
        data["abstention_band"] = Path(self.abstention_band).name if self.abstention_band else None
        return data


# --------------------------------------------------------------------------- command line

def _flag_fields() -> list:
    return [f for f in fields(TrainingConfig) if "help" in f.metadata]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only where it says something: not for on/off switches, whose
    default is the switch being off, nor for None ("the recipe's", "none")."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The ``fakeface-train`` parser, one flag per :class:`TrainingConfig` field (plus ``--from-scratch``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=_HelpFormatter)
    init = p.add_mutually_exclusive_group()
    for f in _flag_fields():
        meta = dict(f.metadata)
        name = meta.pop("flag") or "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {k: v for k, v in meta.items() if k != "help"}
        kwargs["help"] = meta["help"] or None
        if isinstance(f.default, bool):
            kwargs["action"] = "store_false" if f.default else "store_true"
        elif f.default is not MISSING:
            kwargs["default"] = f.default
            kwargs.setdefault("type", type(f.default) if f.default is not None else str)
        (init if f.name == "pretrained" else p).add_argument(name, dest=f.name, **kwargs)
    init.add_argument("--from-scratch", action="store_true",
                      help="random initialisation (the default for architectures without offline weights, e.g. resnet50)")
    return p


def resolve_pretrained(args: argparse.Namespace) -> bool:
    """ImageNet start unless --from-scratch: asked for, or offline weights exist for the architecture."""
    if args.from_scratch or args.pretrained_path:
        return False
    return args.pretrained or has_offline_weights(args.model)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    values = {f.name: getattr(args, f.name) for f in _flag_fields()}
    values["pretrained"] = resolve_pretrained(args)
    return TrainingConfig(**values)
