"""Training state on disk: the checkpointed progress, ``save_state`` folders and resuming from them.

Layout under ``output_dir/checkpoints``: ``step_NNNNNNN/`` (accelerate
``save_state``: model, optimizer, scheduler, RNG, progress; complete once it
holds ``checkpoint_complete.json``), ``best/`` (the best model so far) and the
tracker logs. None of it is ever uploaded.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from fakeface.training.card import describe_dataset
from fakeface.training.config import TrainingConfig

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
TRACKER_DIR = "tensorboard"
_COMPLETE_MARKER = "checkpoint_complete.json"
_STEP_PREFIX = "step_"


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


def run_fingerprint(cfg: TrainingConfig, num_processes: int) -> dict:
    """What must not change between a run and its resumption (else data position and schedule are meaningless)."""
    keys = ("model", "recipe", "epochs", "batch_size", "input_size", "seed", "gradient_accumulation_steps",
            "limit_train", "max_steps", "lr", "weight_decay")
    fingerprint = {k: getattr(cfg, k) for k in keys}
    fingerprint["num_processes"] = num_processes
    fingerprint["dataset"] = describe_dataset(cfg.dataset)[0]
    return fingerprint


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS_DIR


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete step checkpoints, oldest first (a save killed half-way has no marker and is ignored)."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_STEP_PREFIX) and (p / _COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_STEP_PREFIX):]))


def save_checkpoint(accelerator: Any, output_dir: Path, progress: TrainingProgress, keep: int) -> Path:
    """``save_state`` into checkpoints/step_N on all processes; the main process marks it complete and prunes."""
    folder = checkpoint_root(output_dir) / f"{_STEP_PREFIX}{progress.global_step:07d}"
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


def resume_from_checkpoint(accelerator: Any, cfg: TrainingConfig, output_dir: Path, progress: TrainingProgress) -> None:
    checkpoints = list_checkpoints(output_dir)
    if not checkpoints:
        if accelerator.is_main_process:
            logger.warning("--resume: no complete checkpoint in %s; starting from scratch", checkpoint_root(output_dir))
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
