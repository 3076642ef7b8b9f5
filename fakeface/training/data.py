"""Training data: the dataset's splits, lazily decoded and augmented per batch, and their loaders.

Images stay encoded in the dataset (``with_transform``); loader workers decode
the original bytes with :func:`fakeface.data.images.load_image` and apply the
run's preprocessing. Every sample's augmentation is seeded by (seed, epoch,
row), so workers, processes and resumes see the same pixels.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch

from fakeface.data.dataset import load_face_dataset
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.data.preprocess import Augmentation, Preprocessing, build_eval_transform, build_train_transform
from fakeface.evaluation.metrics import apply_condition
from fakeface.faces.crop import FaceCrop
from fakeface.training.card import describe_dataset
from fakeface.training.config import TrainingConfig
from fakeface.training.face_data import crop_split_to_faces, face_crop_notes
from fakeface.utils.constants import LABEL_NAMES


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


class TrainTransform:
    """``with_transform`` function for training: original bytes -> augmented crop.

    ``epoch`` is set before each epoch's iterator is created; loader workers
    are (re)started per epoch and so see the current value.
    """

    def __init__(self, pp: Preprocessing, augmentation: Augmentation, seed: int):
        self.pp, self.augmentation, self.seed, self.epoch = pp, augmentation, seed, 0

    def __call__(self, batch: dict) -> dict:
        pixels = []
        for data, row in zip(batch["image"], batch["_row"]):
            image = _decode_row(load_image, data, row)
            transform = build_train_transform(self.pp, self.augmentation, rng=_sample_rng(self.seed, self.epoch, row))
            pixels.append(transform(image))                                  # (C, H, W)
        return {"pixel_values": pixels, "labels": list(batch["label"]), "rows": list(batch["_row"])}


class EvalTransform:
    """``with_transform`` function for validation: original bytes -> (K, C, H, W) test crops.

    ``condition`` (a name from ``evaluation.ROBUSTNESS_CONDITIONS``) perturbs
    each decoded image first, for the robust recipe's model selection.
    """

    def __init__(self, pp: Preprocessing, condition: str = "clean"):
        self.transform = build_eval_transform(pp)
        self.condition = condition

    def __call__(self, batch: dict) -> dict:
        pixels = [self.transform(apply_condition(_decode_row(load_image, d, r), self.condition))
                  for d, r in zip(batch["image"], batch["_row"])]
        return {"pixel_values": pixels, "labels": list(batch["label"]), "rows": list(batch["_row"])}


def _decode_row(load_image: Callable, data: Mapping, row: int):
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
    if cfg.face_crop:  # every split through the app's face stage (fakeface.training.face_data)
        train, validation, test = (crop_split_to_faces(s, FaceCrop()) for s in (train, validation, test))
        notes.extend(face_crop_notes({"train": train, "validation": validation, "test": test}))
    return train, validation, test, notes


@dataclass
class TrainingData:
    """The run's splits and loaders (before ``accelerator.prepare``)."""

    train_split: Any
    val_split: Any
    test_split: Any
    notes: list[str]
    train_transform: TrainTransform
    sampler: EpochShuffleSampler
    train_loader: torch.utils.data.DataLoader
    val_loader: torch.utils.data.DataLoader
    view_loaders: dict[str, torch.utils.data.DataLoader]   # perturbed validation copies for model selection


def build_training_data(cfg: TrainingConfig, pin_memory: bool) -> TrainingData:
    """Splits -> lazy datasets -> loaders: shuffled train, plain validation, one per selection view."""
    recipe = cfg.resolved_recipe()
    train_split, val_split, test_split, notes = load_training_splits(cfg)
    pp = cfg.build_preprocessing()
    train_transform = TrainTransform(pp, recipe.augmentation, cfg.seed)
    train_data = prepare_split(train_split, train_transform)
    sampler = EpochShuffleSampler(len(train_data), cfg.seed)
    loader_kwargs = dict(num_workers=resolve_num_workers(cfg.num_workers), persistent_workers=False,
                         pin_memory=pin_memory)
    eval_batch_size = cfg.eval_batch_size or cfg.batch_size
    train_loader = torch.utils.data.DataLoader(
        train_data, batch_size=cfg.batch_size, sampler=sampler, drop_last=False,
        # A private generator: creating loader iterators must not consume the
        # global RNG, or a resumed run would drift from an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed), **loader_kwargs,
    )

    def eval_loader(condition: str) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(prepare_split(val_split, EvalTransform(pp, condition)),
                                           batch_size=eval_batch_size, shuffle=False, **loader_kwargs)

    views = {c: eval_loader(c) for c in recipe.select_on if c != "clean"}
    return TrainingData(train_split, val_split, test_split, notes, train_transform, sampler,
                        train_loader, eval_loader("clean"), views)
