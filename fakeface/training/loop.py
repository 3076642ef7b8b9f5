"""Fine-tune a timm detector with accelerate, then calibrate, evaluate, card and publish it.

Reads top to bottom like the loop it runs::

    TrainingConfig -> recipe -> Accelerator -> data (lazy, with_transform) -> model
      -> loop (accumulate / backward / step, checkpoints, validation AUC each epoch)
      -> best model -> temperature + thresholds on validation -> test report + plots
      -> release folder (config.json, model.safetensors, README.md, plots, eval json)
      -> optional int8 fast path -> optional push (one commit)

The same function runs unchanged under ``torchrun`` / ``accelerate launch``
with several processes: each process gets its shard of every batch,
validation gathers logits with ``gather_for_metrics`` (padding dropped), and
everything that writes the release runs on the main process only.

Layout of ``output_dir``::

    config.json  model.safetensors  README.md  eval_results.json  plots/*.png   <- the release
    checkpoints/step_0000040/ ...   accelerate save_state (model, optimizer,
                                    scheduler, RNG, progress); never uploaded
    checkpoints/best/               best model so far (on validation AUC)
    checkpoints/tensorboard/        tracker logs
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fakeface.training.card import describe_dataset
from fakeface.utils.constants import DEFAULT_ARCHITECTURE, FAKE, LABEL_NAMES, SYNTHETIC_GENERATOR
from fakeface.data.preprocess import Augmentation, Preprocessing, build_eval_transform, build_train_transform

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
TRACKER_DIR = "tensorboard"
PLOTS_DIR = "plots"
EVAL_RESULTS_NAME = "eval_results.json"
_COMPLETE_MARKER = "checkpoint_complete.json"
_STEP_PREFIX = "step_"


# --------------------------------------------------------------------------- recipes

@dataclass(frozen=True)
class Recipe:
    """How a detector is trained: protocol, augmentation, what is trainable, optimiser."""

    name: str
    crop_protocol: str
    num_test_crops: int
    augmentation: Augmentation
    freeze_backbone: bool
    optimizer: str            # "adamw" | "adam"
    lr: float
    weight_decay: float
    schedule: str             # "cosine" (with warmup) | "constant"
    warmup_fraction: float
    description: str
    # Validation views the best epoch is chosen on (mean ROC-AUC over them;
    # names from evaluation.ROBUSTNESS_CONDITIONS). Clean validation AUC alone
    # saturates at 1.0 within a few epochs, after which it cannot tell a
    # detector that survives recompression and resizing from one that does not.
    select_on: tuple[str, ...] = ("clean",)


RECIPES: dict[str, Recipe] = {
    "robust": Recipe(
        name="robust",
        crop_protocol="native-crops",
        num_test_crops=5,
        augmentation=Augmentation.robust(),
        freeze_backbone=False,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.02,
        schedule="cosine",
        warmup_fraction=0.1,
        description=(
            "full fine-tune on native-resolution random crops (never downscaled), horizontal flips, "
            "Gaussian blur, JPEG re-encoding and random rescaling (Wang et al. 2020 style); "
            "evaluation averages logits over fixed test crops; the best epoch is chosen on the mean validation "
            "AUC of clean, JPEG q75 and 0.5x-downscaled copies"
        ),
        select_on=("clean", "jpeg75", "downscale0.5"),
    ),
    # The original project's recipe, kept for comparison: squash-resize the whole
    # face, frozen backbone, Adam. Its head was Dense(512, ReLU) -> Dense(1,
    # sigmoid). A plain timm resnet/mobilenetv2 config cannot express a hidden
    # head layer, and the release must stay loadable by timm and transformers, so
    # the head here is the architecture's own linear classifier on the frozen
    # pooled features. Its 2-way softmax is the sigmoid: softmax([a, b])[1] =
    # sigmoid(b - a), so cross-entropy on two logits is binary cross-entropy on
    # their difference.
    "seed": Recipe(
        name="seed",
        crop_protocol="resize",
        num_test_crops=1,
        augmentation=Augmentation.none(),
        freeze_backbone=True,
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        schedule="constant",
        warmup_fraction=0.0,
        description=(
            "the original project's recipe: the whole image squash-resized, frozen backbone, "
            "linear softmax head (equivalent to a sigmoid output) trained with Adam, no augmentation"
        ),
    ),
}


@dataclass
class TrainingConfig:
    """Everything a run needs; ``train.py`` maps its flags one to one onto this."""

    dataset: Any                          # Hub id, local folder, or a datasets.DatasetDict
    output_dir: str
    model: str = DEFAULT_ARCHITECTURE
    recipe: str = "robust"
    epochs: int = 4
    batch_size: int = 16                  # per process (small sets learn faster with more steps)
    lr: float | None = None               # default: the recipe's
    weight_decay: float | None = None
    input_size: int = 224                 # crop (robust) or resize (seed) side, pixels
    num_test_crops: int | None = None     # default: the recipe's
    pretrained: bool = False
    pretrained_path: str | None = None
    mixed_precision: str = "no"           # no | bf16 | fp16
    gradient_accumulation_steps: int = 1
    channels_last: bool = False
    resume: bool = False
    push_to_hub: str | None = None
    private: bool = False
    seed: int = 0
    deterministic: bool = True
    target_fpr: float = 0.05
    checkpoint_every: int = 0             # optimizer steps; 0 = only at the end of each epoch
    keep_checkpoints: int = 2
    max_steps: int | None = None          # stop after this many optimizer steps (tests, quick runs)
    limit_train: int | None = None        # use only the first N training images (after a seeded shuffle)
    limit_eval: int | None = None         # use only the first N validation / test images
    num_workers: int | None = None        # loader processes; None: cores beyond the 2 compute threads, at most 4
    eval_batch_size: int | None = None
    log_with: str | None = "tensorboard"  # any accelerate tracker name, or None
    log_every: int = 10
    dataset_revision: str | None = None
    robustness: bool = True
    plots: bool = True
    fast_path: bool = True
    cpu: bool = False                     # force CPU even when a GPU is present

    def resolved_recipe(self) -> Recipe:
        try:
            return RECIPES[self.recipe]
        except KeyError:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose from {sorted(RECIPES)}") from None

    def validate(self) -> None:
        """Fail before any work is done, with the flag to fix in the message."""
        self.resolved_recipe()
        checks = [
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (self.gradient_accumulation_steps >= 1, "--gradient-accumulation-steps must be >= 1"),
            (self.input_size >= 16, "--input-size must be at least 16 pixels"),
            (self.mixed_precision in ("no", "bf16", "fp16"), "--mixed-precision must be no, bf16 or fp16"),
            (0.0 <= self.target_fpr < 1.0, "--target-fpr must be in [0, 1)"),
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

    def build_preprocessing(self) -> Preprocessing:
        recipe = self.resolved_recipe()
        return Preprocessing(
            input_size=(3, self.input_size, self.input_size),
            crop_protocol=recipe.crop_protocol,
            num_test_crops=self.num_test_crops or recipe.num_test_crops,
        )

    def public_dict(self) -> dict[str, Any]:
        """The settings as published in the card and eval json: no local paths, no objects."""
        # Not asdict(): it would deep-copy an in-memory DatasetDict.
        private = ("dataset", "output_dir", "pretrained_path")
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in private}
        data["dataset"] = describe_dataset(self.dataset)[0]
        data["pretrained_path"] = Path(self.pretrained_path).name if self.pretrained_path else None
        return data


# --------------------------------------------------------------------------- progress (checkpointed)

@dataclass
class TrainingProgress:
    """Where the loop stands; saved with every checkpoint (``register_for_checkpointing``)."""

    epoch: int = 0                 # current epoch (0-based)
    batches_done: int = 0          # batches of the current epoch already consumed by this process
    global_step: int = 0           # optimizer steps taken
    best_auc: float = -1.0
    best_nll: float = math.inf
    best_epoch: int = -1
    best_step: int = -1
    # Training loss of the current epoch so far, summed over processes, as of
    # the last checkpoint (so a resumed epoch reports the same mean loss).
    epoch_loss_sum: float = 0.0
    epoch_loss_batches: int = 0
    history: list = field(default_factory=list)   # one dict per validation
    fingerprint: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    def load_state_dict(self, state: Mapping) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def _run_fingerprint(cfg: TrainingConfig, num_processes: int) -> dict:
    """What must not change between a run and its resumption (else data position and schedule are meaningless)."""
    keys = ("model", "recipe", "epochs", "batch_size", "input_size", "seed", "gradient_accumulation_steps",
            "limit_train", "max_steps", "lr", "weight_decay")
    fingerprint = {k: getattr(cfg, k) for k in keys}
    fingerprint["num_processes"] = num_processes
    fingerprint["dataset"] = describe_dataset(cfg.dataset)[0]
    return fingerprint


# --------------------------------------------------------------------------- data

class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of ``range(n)`` that depends only on (seed, epoch).

    The epoch is set explicitly with :meth:`use_epoch` (deliberately not
    ``set_epoch``, which accelerate calls with its own counter), so a resumed
    run sees exactly the order the interrupted one saw.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


def resolve_num_workers(requested: int | None) -> int:
    """Loader worker processes: as asked, else the cores left after two compute threads (0 on 2 cores), at most 4."""
    if requested is not None:
        return requested
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def _sample_rng(seed: int, epoch: int, row: int) -> random.Random:
    """The augmentation RNG of one sample in one epoch: independent of workers, processes and resumes."""
    return random.Random((seed * 1_000_003 + epoch) * 1_000_003 + row)


class _TrainTransform:
    """``with_transform`` function for training: original bytes -> augmented crop.

    ``epoch`` is set before each epoch's iterator is created; loader workers
    are (re)started per epoch and so see the current value.
    """

    def __init__(self, pp: Preprocessing, augmentation: Augmentation, seed: int):
        self.pp, self.augmentation, self.seed, self.epoch = pp, augmentation, seed, 0

    def __call__(self, batch: dict) -> dict:
        from fakeface.data.images import load_image

        pixels = []
        for data, row in zip(batch["image"], batch["_row"]):
            image = _decode_row(load_image, data, row)
            transform = build_train_transform(self.pp, self.augmentation, rng=_sample_rng(self.seed, self.epoch, row))
            pixels.append(transform(image))                                  # (C, H, W)
        return {"pixel_values": pixels, "labels": list(batch["label"]), "rows": list(batch["_row"])}


class _EvalTransform:
    """``with_transform`` function for validation: original bytes -> (K, C, H, W) test crops.

    ``condition`` (a name from ``evaluation.ROBUSTNESS_CONDITIONS``) perturbs
    each decoded image first, for the robust recipe's model selection.
    """

    def __init__(self, pp: Preprocessing, condition: str = "clean"):
        self.transform = build_eval_transform(pp)
        self.condition = condition

    def __call__(self, batch: dict) -> dict:
        from fakeface.evaluation.metrics import apply_condition
        from fakeface.data.images import load_image

        pixels = [self.transform(apply_condition(_decode_row(load_image, d, r), self.condition))
                  for d, r in zip(batch["image"], batch["_row"])]
        return {"pixel_values": pixels, "labels": list(batch["label"]), "rows": list(batch["_row"])}


def _decode_row(load_image: Callable, data: Mapping, row: int):
    from fakeface.data.images import ImageDecodeError

    try:
        return load_image(data.get("bytes") or data.get("path")).image
    except ImageDecodeError as error:
        raise ImageDecodeError(f"dataset row {row}: {error}") from error


def prepare_split(split: Any, transform: Callable) -> Any:
    """Lazy view of a split: the image column stays encoded; ``transform`` decodes per batch.

    A ``_row`` column (the row index) lets the transform seed per-sample
    augmentation and lets validation check that every row was scored once.
    """
    from datasets import Image as ImageFeature

    keep = ["image", "label"]
    split = split.remove_columns([c for c in split.column_names if c not in keep])
    split = split.cast_column("image", ImageFeature(decode=False))
    split = split.add_column("_row", list(range(len(split))))
    return split.with_transform(transform)


def load_training_splits(cfg: TrainingConfig) -> tuple[Any, Any, Any, list[str]]:
    """(train, validation, test, notes): the dataset's splits, with limits applied.

    A dataset without a validation split gets one carved from train (10 %,
    seeded); without a test split, the test report is on validation, and the
    notes (which go into the card) say so.
    """
    from datasets import DatasetDict

    notes: list[str] = []
    if isinstance(cfg.dataset, (str, os.PathLike)):
        from fakeface.data.dataset import load_face_dataset

        data = load_face_dataset(os.fspath(cfg.dataset), revision=cfg.dataset_revision)
    else:
        data = cfg.dataset
    if not isinstance(data, DatasetDict) or "train" not in data:
        raise ValueError(f"dataset {describe_dataset(cfg.dataset)[0]} has no 'train' split")
    names = data["train"].features["label"].names if hasattr(data["train"].features["label"], "names") else None
    if names is not None and list(names) != list(LABEL_NAMES):
        raise ValueError(f"dataset labels are {names}, expected {list(LABEL_NAMES)}")
    train = data["train"]
    if "validation" in data:
        validation = data["validation"]
    else:
        parts = train.train_test_split(test_size=0.1, seed=cfg.seed, stratify_by_column="label")
        train, validation = parts["train"], parts["test"]
        notes.append("the dataset has no validation split: 10 % of train (seeded, stratified) was held out")
    if "test" in data:
        test = data["test"]
    else:
        test = validation
        notes.append("the dataset has no test split: the reported test metrics are on the validation split")
    if cfg.limit_train is not None and len(train) > cfg.limit_train:
        train = train.shuffle(seed=cfg.seed).select(range(cfg.limit_train))
    if cfg.limit_eval is not None:
        validation = validation.shuffle(seed=cfg.seed).select(range(min(cfg.limit_eval, len(validation))))
        test = test.shuffle(seed=cfg.seed).select(range(min(cfg.limit_eval, len(test))))
    for name, split in (("train", train), ("validation", validation), ("test", test)):
        if len(split) == 0:
            raise ValueError(f"the {name} split is empty")
    return train, validation, test, notes


# --------------------------------------------------------------------------- model and optimiser

def create_training_model(cfg: TrainingConfig) -> nn.Module:
    """A detector with the run's preprocessing in its config, frozen per the recipe."""
    from fakeface.modeling.detector import create_detector

    model = create_detector(
        cfg.model, preprocessing=cfg.build_preprocessing(), pretrained=cfg.pretrained,
        pretrained_path=cfg.pretrained_path,
    )
    # A fresh two-way head starts at zero: p(fake) = 0.5 for every image. timm's
    # default (Google-style) init scales by fan-out, which for 2 classes gives
    # weights of ~0.7 and initial losses of 5-10 that take epochs to undo.
    with torch.no_grad():
        for parameter in model.get_classifier().parameters():
            parameter.zero_()
    if cfg.resolved_recipe().freeze_backbone:
        head = set(id(p) for p in model.get_classifier().parameters())
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in head)
    return model


def _set_train_mode(model: nn.Module, recipe: Recipe) -> None:
    # A frozen backbone must also keep its BatchNorm statistics frozen.
    model.train(not recipe.freeze_backbone)


def build_optimizer(model: nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    recipe = cfg.resolved_recipe()
    lr = cfg.lr or recipe.lr
    weight_decay = recipe.weight_decay if cfg.weight_decay is None else cfg.weight_decay
    trainable = [p for p in model.parameters() if p.requires_grad]
    # No weight decay on norms and biases (1-D tensors).
    groups = [
        {"params": [p for p in trainable if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim <= 1], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    warmup = int(round(recipe.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if recipe.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- checkpoints

def _checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first (a save killed half-way has no marker and is ignored)."""
    root = _checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_STEP_PREFIX) and (p / _COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX):]))


def _save_checkpoint(accelerator: Any, output_dir: Path, progress: TrainingProgress, keep: int) -> Path:
    """``save_state`` into checkpoints/step_N on all processes; the main process marks it complete and prunes."""
    folder = _checkpoint_root(output_dir) / f"{_STEP_PREFIX}{progress.global_step:07d}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and folder.exists():
        shutil.rmtree(folder)   # an incomplete save of the same step from a killed run
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        marker = {"global_step": progress.global_step, "epoch": progress.epoch, "batches_done": progress.batches_done}
        (folder / _COMPLETE_MARKER).write_text(json.dumps(marker) + "\n")
        for old in list_checkpoints(output_dir)[:-max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return folder


# --------------------------------------------------------------------------- validation

@torch.no_grad()
def _validate(accelerator: Any, model: nn.Module, loader: Any, channels_last: bool) -> dict[str, Any]:
    """Crop-averaged validation logits of the whole split, gathered over processes."""
    from fakeface.evaluation.metrics import compute_metrics
    from fakeface.modeling.inference import fake_probability, logits_from_crops

    model.eval()
    all_logits, all_labels, all_rows = [], [], []
    for batch in loader:
        crops = batch["pixel_values"]                                        # (B, K, C, H, W)
        if channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last) if crops.ndim == 4 else crops
        with accelerator.autocast():
            logits = logits_from_crops(model, crops).float()                 # (B, 2)
        logits, labels, rows = accelerator.gather_for_metrics((logits, batch["labels"], batch["rows"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
        all_rows.append(rows.cpu())
    logits = torch.cat(all_logits).numpy()
    labels = torch.cat(all_labels).numpy()
    rows = torch.cat(all_rows).numpy()
    nll = float(F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)).item())
    metrics = compute_metrics(labels, fake_probability(logits), 0.5)
    metrics.update(nll=nll, rows_scored=int(rows.size), rows_unique=int(np.unique(rows).size))
    return metrics


# --------------------------------------------------------------------------- results

@dataclass
class TrainingResult:
    """What :func:`train` returns (on every process; release fields only on the main one)."""

    output_dir: Path
    progress: TrainingProgress
    validation: dict[str, Any] | None = None        # last validation metrics (all processes)
    calibration: dict[str, Any] | None = None
    report: dict[str, Any] | None = None            # test report (main process)
    hub_commit: str | None = None
    throughput: dict[str, float] = field(default_factory=dict)
    fast_path: dict[str, Any] | None = None


StepCallback = Callable[[TrainingProgress], None]


# --------------------------------------------------------------------------- the loop

def train(cfg: TrainingConfig, *, step_callback: StepCallback | None = None) -> TrainingResult:
    """Train, checkpoint, select on validation AUC, calibrate, evaluate, write the release, push.

    ``step_callback(progress)`` is called after every optimizer step on every
    process (e.g. to stop a notebook run; tests use it to kill a run).
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    cfg.validate()
    recipe = cfg.resolved_recipe()
    output_dir = Path(cfg.output_dir)
    was_deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())

    accelerator = Accelerator(
        cpu=_use_cpu(cfg),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=cfg.log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(_checkpoint_root(output_dir) / TRACKER_DIR)
        ),
        dataloader_config=DataLoaderConfiguration(even_batches=True),
    )
    if cfg.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.is_main_process:
        logger.warning("--mixed-precision fp16 has no CPU implementation in accelerate: training runs in fp32 "
                       "(use bf16 on CPUs with AVX-512 BF16 / AMX)")
    try:
        # Same seed on every process: identical initial weights everywhere.
        set_seed(cfg.seed)
        if cfg.deterministic:
            _enable_determinism()
        return _train(cfg, recipe, accelerator, output_dir, step_callback, tqdm)
    finally:
        accelerator.end_training()
        torch.use_deterministic_algorithms(was_deterministic[0], warn_only=was_deterministic[1])
        # Let a later train() in this process build a fresh Accelerator (tests, notebooks).
        AcceleratorState._reset_state()
        GradientState._reset_state()


def _enable_determinism() -> None:
    # warn_only: some CUDA kernels (e.g. adaptive average pooling's backward)
    # have no deterministic version; they should warn, not stop a GPU run.
    # On CPU every kernel used here is deterministic.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _use_cpu(cfg: TrainingConfig) -> bool:
    # accelerate 1.15 only sets up gloo (MULTI_CPU) for torchrun-style
    # launches when told cpu=True; without it each process trains alone.
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return cfg.cpu or (launched_distributed and not torch.cuda.is_available())


def _train(cfg: TrainingConfig, recipe: Recipe, accelerator: Any, output_dir: Path,
           step_callback: StepCallback | None, tqdm: Any) -> TrainingResult:
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
    if not cfg.resume and main and list_checkpoints(output_dir):
        logger.warning("%s already holds checkpoints; starting afresh (use --resume to continue)", output_dir)

    # ---- data: encoded bytes in, decoded lazily per batch in loader workers
    train_split, val_split, test_split, data_notes = load_training_splits(cfg)
    pp = cfg.build_preprocessing()
    train_transform = _TrainTransform(pp, recipe.augmentation, cfg.seed)
    train_data = prepare_split(train_split, train_transform)
    val_data = prepare_split(val_split, _EvalTransform(pp))
    selection_views = [c for c in recipe.select_on if c != "clean"]
    sampler = EpochShuffleSampler(len(train_data), cfg.seed)
    loader_kwargs = dict(num_workers=resolve_num_workers(cfg.num_workers), persistent_workers=False,
                         pin_memory=accelerator.device.type == "cuda")
    train_loader = torch.utils.data.DataLoader(
        train_data, batch_size=cfg.batch_size, sampler=sampler, drop_last=False,
        # A private generator: creating loader iterators must not consume the
        # global RNG, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed), **loader_kwargs,
    )
    val_loader = torch.utils.data.DataLoader(
        val_data, batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, **loader_kwargs,
    )

    # ---- model, optimiser, schedule
    model = create_training_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    batches_per_epoch = math.ceil(len(train_data) / (cfg.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    # accelerate steps a prepared scheduler once per process per optimizer step.
    scheduler = build_scheduler(optimizer, recipe, total_steps * accelerator.num_processes)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    view_loaders = {
        condition: accelerator.prepare(torch.utils.data.DataLoader(
            prepare_split(val_split, _EvalTransform(pp, condition)),
            batch_size=cfg.eval_batch_size or cfg.batch_size, shuffle=False, **loader_kwargs))
        for condition in selection_views
    }
    progress = TrainingProgress(fingerprint=_run_fingerprint(cfg, accelerator.num_processes))
    accelerator.register_for_checkpointing(progress)

    if cfg.resume:
        _resume(accelerator, cfg, output_dir, progress)

    if cfg.log_with:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.public_dict().items()}
        accelerator.init_trackers("fakeface", config=hparams)
    if main:
        logger.info(
            "training %s (%s recipe) on %d images, %d validation, %d processes, %d steps/epoch, %d steps in all",
            cfg.model, recipe.name, len(train_data), len(val_data), accelerator.num_processes,
            steps_per_epoch, total_steps,
        )

    # Whole-run training throughput (this invocation): images, loop seconds
    # (excluding validation and checkpoint saves), seconds blocked on the loader.
    totals = {"images": 0, "seconds": 0.0, "wait": 0.0}
    last_validation: dict[str, Any] | None = progress.history[-1] if progress.history else None
    stop = progress.global_step >= total_steps

    while progress.epoch < cfg.epochs and not stop:
        epoch = progress.epoch
        sampler.use_epoch(epoch)
        train_transform.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = train_loader
        if progress.batches_done:
            loader = accelerator.skip_first_batches(train_loader, progress.batches_done)
        _set_train_mode(model, recipe)
        bar = tqdm(total=batches_per_epoch, initial=progress.batches_done, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   disable=not accelerator.is_local_main_process, leave=False)
        window_loss, window_images, window_wait = [], 0, 0.0
        # (loss sum, batches) of this process, kept on the device: no per-step host sync.
        sum_dtype = torch.float32 if accelerator.device.type == "mps" else torch.float64
        epoch_loss = torch.zeros(2, dtype=sum_dtype, device=accelerator.device)
        window_start = epoch_start = time.perf_counter()
        paused = 0.0                                                        # checkpoint time inside the loop
        fetch_start = time.perf_counter()
        for batch in loader:
            waited = time.perf_counter() - fetch_start                      # time blocked on the loader
            window_wait += waited
            totals["wait"] += waited
            pixels, labels = batch["pixel_values"], batch["labels"]          # (B, C, H, W), (B,)
            if cfg.channels_last:
                pixels = pixels.contiguous(memory_format=torch.channels_last)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    logits = model(pixels)
                loss = F.cross_entropy(logits.float(), labels)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 5.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.batches_done += 1
            window_loss.append(loss.detach())
            epoch_loss += torch.stack([loss.detach().to(sum_dtype), torch.ones((), dtype=sum_dtype, device=loss.device)])
            window_images += labels.shape[0] * accelerator.num_processes
            totals["images"] += labels.shape[0] * accelerator.num_processes
            bar.update(1)
            if accelerator.sync_gradients:
                progress.global_step += 1
                if progress.global_step % cfg.log_every == 0 or progress.batches_done == batches_per_epoch:
                    elapsed = time.perf_counter() - window_start
                    # note: gather is a sync point; only every log_every steps
                    mean_loss = accelerator.gather(torch.stack(window_loss).mean().reshape(1)).mean().item()
                    images_per_second = window_images / elapsed if elapsed > 0 else float("nan")
                    accelerator.log({"train/loss": mean_loss, "train/lr": scheduler.get_last_lr()[0],
                                     "train/images_per_second": images_per_second,
                                     "train/loader_wait_fraction": window_wait / elapsed if elapsed > 0 else float("nan"),
                                     "train/epoch": epoch + progress.batches_done / batches_per_epoch},
                                    step=progress.global_step)
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{images_per_second:.1f}")
                    window_loss, window_images, window_wait = [], 0, 0.0
                    window_start = time.perf_counter()
                if step_callback is not None:
                    step_callback(progress)
                stop = progress.global_step >= total_steps
                epoch_done = progress.batches_done >= batches_per_epoch
                if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0 and not (stop or epoch_done):
                    saving = time.perf_counter()
                    epoch_loss = _fold_epoch_loss(accelerator, progress, epoch_loss)
                    _save_checkpoint(accelerator, output_dir, progress, cfg.keep_checkpoints)
                    paused += time.perf_counter() - saving
                    window_start += time.perf_counter() - saving
                if stop:
                    break
            fetch_start = time.perf_counter()
        totals["seconds"] += time.perf_counter() - epoch_start - paused
        bar.close()

        # ---- end of epoch (or of the step budget): validate, keep the best, checkpoint
        validation = _validate(accelerator, model, val_loader, cfg.channels_last)
        _fold_epoch_loss(accelerator, progress, epoch_loss)
        train_loss = progress.epoch_loss_sum / progress.epoch_loss_batches if progress.epoch_loss_batches else float("nan")
        progress.epoch_loss_sum, progress.epoch_loss_batches = 0.0, 0
        validation.update(epoch=epoch, step=progress.global_step, train_loss=train_loss)
        last_validation = validation
        if validation["rows_unique"] != len(val_data) or validation["rows_scored"] != len(val_data):
            raise RuntimeError(
                f"validation scored {validation['rows_scored']} rows ({validation['rows_unique']} distinct) "
                f"of {len(val_data)}: gathering across processes lost or duplicated samples"
            )
        view_aucs = {"clean": validation["roc_auc"]}
        for condition, loader in view_loaders.items():
            view_aucs[condition] = _validate(accelerator, model, loader, cfg.channels_last)["roc_auc"]
        auc = float(np.mean([0.0 if math.isnan(a) else a for a in view_aucs.values()]))
        validation.update(selection_auc=auc, **{f"roc_auc_{c}": a for c, a in view_aucs.items() if c != "clean"})
        improved = auc > progress.best_auc + 1e-12 or (abs(auc - progress.best_auc) <= 1e-12 and validation["nll"] < progress.best_nll)
        if improved:
            progress.best_auc, progress.best_nll = auc, validation["nll"]
            progress.best_epoch, progress.best_step = epoch, progress.global_step
            if main:
                from fakeface.modeling.detector import save_detector

                save_detector(accelerator.unwrap_model(model), _checkpoint_root(output_dir) / BEST_DIR)
        accelerator.log({"train/epoch_loss": train_loss, "val/roc_auc": validation["roc_auc"], "val/nll": validation["nll"],
                         "val/accuracy": validation["accuracy"], "val/ece": validation["ece"],
                         "val/selection_auc": auc, **{f"val/roc_auc_{c}": a for c, a in view_aucs.items() if c != "clean"}},
                        step=progress.global_step)
        progress.history.append({k: validation[k] for k in (
            "epoch", "step", "train_loss", "roc_auc", "average_precision", "accuracy", "nll", "ece", "n", "rows_unique",
            "selection_auc", *(f"roc_auc_{c}" for c in view_loaders))})
        if main:
            views = "".join(f", {c} {a:.4f}" for c, a in view_aucs.items() if c != "clean")
            logger.info("epoch %d: validation AUC %.4f%s, NLL %.4f%s", epoch + 1, validation["roc_auc"], views,
                        validation["nll"], " (best so far)" if improved else "")
        progress.epoch += 1
        progress.batches_done = 0
        _save_checkpoint(accelerator, output_dir, progress, cfg.keep_checkpoints)
        _set_train_mode(model, recipe)

    accelerator.wait_for_everyone()
    throughput = {
        "images_per_second": totals["images"] / totals["seconds"] if totals["seconds"] > 0 else float("nan"),
        "loader_wait_fraction": totals["wait"] / totals["seconds"] if totals["seconds"] > 0 else float("nan"),
        "images": totals["images"], "seconds": totals["seconds"], "num_processes": accelerator.num_processes,
    }
    result = TrainingResult(output_dir=output_dir, progress=progress, validation=last_validation, throughput=throughput)
    if main:
        _finish_release(cfg, recipe, output_dir, result, train_split, val_split, test_split, data_notes)
    accelerator.wait_for_everyone()
    return result


def _fold_epoch_loss(accelerator: Any, progress: TrainingProgress, local: torch.Tensor) -> torch.Tensor:
    """Add every process's (loss sum, batches) into ``progress``; returns a zeroed local accumulator."""
    total = accelerator.reduce(local.clone(), reduction="sum").cpu()
    progress.epoch_loss_sum += float(total[0])
    progress.epoch_loss_batches += int(total[1])
    return torch.zeros_like(local)


def _resume(accelerator: Any, cfg: TrainingConfig, output_dir: Path, progress: TrainingProgress) -> None:
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        if accelerator.is_main_process:
            logger.warning("--resume: no complete checkpoint in %s; starting from scratch", _checkpoint_root(output_dir))
        return
    expected = dict(progress.fingerprint)
    accelerator.load_state(str(checkpoints[-1]))
    if progress.fingerprint != expected:
        changed = sorted(k for k in expected if progress.fingerprint.get(k) != expected[k])
        raise ValueError(
            f"cannot resume from {checkpoints[-1].name}: the run's settings changed ({', '.join(changed)}); "
            f"use the original settings or a new --output-dir"
        )
    if accelerator.is_main_process:
        logger.info("resumed from %s: epoch %d, batch %d, step %d", checkpoints[-1].name, progress.epoch + 1,
                    progress.batches_done, progress.global_step)


# --------------------------------------------------------------------------- release

def _finish_release(cfg: TrainingConfig, recipe: Recipe, output_dir: Path, result: TrainingResult,
                    train_split: Any, val_split: Any, test_split: Any, data_notes: list[str]) -> None:
    """Best model -> calibration on validation -> test report -> release folder -> fast path -> push."""
    from fakeface.training.card import write_model_card
    from fakeface.evaluation.metrics import calibrate_detector, decode_split, evaluate_detector, json_safe
    from fakeface.modeling.inference import Detector
    from fakeface.modeling.detector import load_detector, save_detector, update_detector_settings

    best_dir = _checkpoint_root(output_dir) / BEST_DIR
    model = load_detector(best_dir)
    detector = Detector(model)
    batch_size = cfg.eval_batch_size or cfg.batch_size

    val_images, val_labels, _ = decode_split(val_split)
    val_logits = detector.score_batches(val_images, batch_size).logits
    calibration = calibrate_detector(model, val_logits, val_labels, target_fpr=cfg.target_fpr)
    scope = _training_scope(train_split)
    update_detector_settings(model, recipe=recipe.name, trained_on=scope,
                             synthetic_training_data=SYNTHETIC_GENERATOR in scope["fake_generators"])
    result.calibration = calibration

    test_decoded = decode_split(test_split)
    report = evaluate_detector(detector, test_split, batch_size=batch_size, robustness=cfg.robustness, decoded=test_decoded)
    report["validation"] = {"history": result.progress.history, "best_epoch": result.progress.best_epoch + 1,
                            "best_step": result.progress.best_step, "best_auc": result.progress.best_auc,
                            "calibration": calibration}
    report["training"] = {"config": cfg.public_dict(), "recipe": asdict(recipe) | {"augmentation": asdict(recipe.augmentation)},
                          "throughput": result.throughput, "notes": data_notes,
                          "num_processes": result.progress.fingerprint.get("num_processes", 1),
                          "splits": {"train": len(train_split), "validation": len(val_split), "test": len(test_split)}}
    result.report = report

    save_detector(model, output_dir)
    plots: dict[str, Path] = {}
    if cfg.plots:
        from fakeface.evaluation.plots import save_report_figures

        plots = save_report_figures(report, output_dir / PLOTS_DIR, detector=detector, images=test_decoded[0], seed=cfg.seed)
    fast = None
    if cfg.fast_path:
        fast = _export_fast_path(model, output_dir, val_images, test_decoded[0], test_decoded[1])
    result.fast_path = fast
    public = {k: v for k, v in report.items() if k != "scores"}
    public["fast_path"] = fast
    (output_dir / EVAL_RESULTS_NAME).write_text(json.dumps(json_safe(public), indent=2) + "\n")
    write_model_card(output_dir, report=public, config=cfg, recipe=recipe,
                     plots={k: p.relative_to(output_dir).as_posix() for k, p in plots.items()})
    if cfg.push_to_hub:
        from fakeface.modeling.detector import push_detector

        result.hub_commit = push_detector(output_dir, cfg.push_to_hub, private=cfg.private,
                                          commit_message=f"fakeface {cfg.model} ({recipe.name} recipe)")
        logger.info("pushed the release to %s (commit %s)", cfg.push_to_hub, result.hub_commit[:12])


def _training_scope(*splits: Any) -> dict[str, list[str]]:
    """Which generators (fake) and real sources the model saw; goes into its config and card."""
    fakes, reals = set(), set()
    for split in splits:
        if "generator" not in split.column_names:
            continue
        for generator, label in zip(split["generator"], split["label"]):
            if generator is not None:
                (fakes if label == FAKE else reals).add(str(generator))
    return {"fake_generators": sorted(fakes), "real_sources": sorted(reals)}


def _export_fast_path(model: nn.Module, output_dir: Path, calibration_images: list, holdout_images: list,
                      holdout_labels: np.ndarray) -> dict[str, Any] | None:
    """int8 ONNX beside the safetensors when ``fakeface.modeling.fastpath`` is available; never fails the run."""
    try:
        from fakeface.modeling.fastpath import export_fast_path
    except ImportError as error:
        logger.info("fast path skipped: fakeface.modeling.fastpath is not available (%s)", error)
        return None
    try:
        return export_fast_path(model, output_dir, calibration_images[:64], holdout_images, holdout_labels)
    except Exception as error:  # an optional artefact: log and publish without it
        logger.warning("fast path export failed, publishing without it: %s: %s", type(error).__name__, error)
        return {"error": f"{type(error).__name__}: {error}"}
