"""The model, optimiser and learning-rate schedule of a training run."""
from __future__ import annotations

import math

import torch
from torch import nn

from fakeface.faces.crop import FaceCrop
from fakeface.modeling.detector import create_detector, set_face_crop
from fakeface.training.config import TrainingConfig
from fakeface.training.recipes import Recipe


def create_training_model(cfg: TrainingConfig) -> nn.Module:
    """A detector with the run's preprocessing in its config, frozen per the recipe."""
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
    if cfg.face_crop:
        set_face_crop(model, FaceCrop())
    if cfg.resolved_recipe().freeze_backbone:
        head = set(id(p) for p in model.get_classifier().parameters())
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in head)
    return model


def set_train_mode(model: nn.Module, recipe: Recipe) -> None:
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
