"""Fine-tune a timm detector with accelerate, then calibrate, evaluate, card and publish it.

The loop reads like accelerate's examples::

    TrainingConfig -> Accelerator -> data (lazy, with_transform) -> model, optimiser, schedule -> prepare
      -> for each epoch: for batch in loader: accumulate / backward / step   (training.loop)
      -> validation AUC, best model, checkpoint                              (training.validation, .checkpoints)
      -> release: calibration, test report, plots, card, fast path, push     (training.release)

Bookkeeping lives beside it: throughput in :mod:`fakeface.training.meter`,
data in :mod:`fakeface.training.data`, settings in :mod:`fakeface.training.config`.

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

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch import nn
from tqdm.auto import tqdm

from fakeface.modeling.detector import save_detector
from fakeface.training.checkpoints import (
    BEST_DIR, TRACKER_DIR, TrainingProgress, checkpoint_root, list_checkpoints, resume_from_checkpoint,
    run_fingerprint, save_checkpoint,
)
from fakeface.training.config import TrainingConfig
from fakeface.training.data import TrainingData, build_training_data
from fakeface.training.meter import ThroughputMeter
from fakeface.training.model import build_optimizer, build_scheduler, create_training_model, set_train_mode
from fakeface.training.recipes import RECIPES, Recipe
from fakeface.training.release import TrainingResult, write_release
from fakeface.training.validation import HISTORY_KEYS, check_every_row_scored, is_improvement, selection_auc, validate

__all__ = ["RECIPES", "TrainingConfig", "TrainingResult", "list_checkpoints", "train"]

logger = logging.getLogger(__name__)

StepCallback = Callable[[TrainingProgress], None]


def train(cfg: TrainingConfig, *, step_callback: StepCallback | None = None) -> TrainingResult:
    """Train, checkpoint, select on validation AUC, calibrate, evaluate, write the release, push.

    ``step_callback(progress)`` is called after every optimizer step on every
    process (e.g. to stop a notebook run; tests use it to kill a run).
    """
    cfg.validate()
    output_dir = Path(cfg.output_dir)
    was_deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())
    accelerator = Accelerator(
        cpu=_use_cpu(cfg),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        log_with=cfg.log_with,
        project_config=ProjectConfiguration(
            project_dir=str(output_dir), logging_dir=str(checkpoint_root(output_dir) / TRACKER_DIR)
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
        return _train(cfg, accelerator, output_dir, step_callback)
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


@dataclass
class _Run:
    """What the epochs of one run share (after ``accelerator.prepare``)."""

    cfg: TrainingConfig
    recipe: Recipe
    accelerator: Any
    output_dir: Path
    data: TrainingData
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    view_loaders: dict[str, Any]
    progress: TrainingProgress
    meter: ThroughputMeter
    batches_per_epoch: int
    total_steps: int
    step_callback: StepCallback | None


def _train(cfg: TrainingConfig, accelerator: Any, output_dir: Path, step_callback: StepCallback | None) -> TrainingResult:
    run = _set_up(cfg, accelerator, output_dir, step_callback)
    last_validation: dict[str, Any] | None = run.progress.history[-1] if run.progress.history else None
    while run.progress.epoch < cfg.epochs and run.progress.global_step < run.total_steps:
        epoch_loss = _train_one_epoch(run)
        last_validation = _end_epoch(run, epoch_loss)
    accelerator.wait_for_everyone()
    result = TrainingResult(output_dir=output_dir, progress=run.progress, validation=last_validation,
                            throughput=run.meter.summary())
    if accelerator.is_main_process:
        write_release(cfg, run.recipe, output_dir, result, run.data.train_split, run.data.val_split,
                      run.data.test_split, run.data.notes)
    accelerator.wait_for_everyone()
    return result


def _set_up(cfg: TrainingConfig, accelerator: Any, output_dir: Path, step_callback: StepCallback | None) -> _Run:
    """Data, model, optimiser and schedule, prepared; progress registered and resumed; trackers started."""
    recipe = cfg.resolved_recipe()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.resume and list_checkpoints(output_dir):
            logger.warning("%s already holds checkpoints; starting afresh (use --resume to continue)", output_dir)
    data = build_training_data(cfg, pin_memory=accelerator.device.type == "cuda")
    model = create_training_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    n_train = len(data.train_loader.dataset)
    batches_per_epoch = math.ceil(n_train / (cfg.batch_size * accelerator.num_processes))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.gradient_accumulation_steps)
    total_steps = min(cfg.epochs * steps_per_epoch, cfg.max_steps or math.inf)
    # accelerate steps a prepared scheduler once per process per optimizer step.
    scheduler = build_scheduler(optimizer, recipe, total_steps * accelerator.num_processes)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, data.train_loader, data.val_loader, scheduler
    )
    view_loaders = {condition: accelerator.prepare(loader) for condition, loader in data.view_loaders.items()}
    progress = TrainingProgress(fingerprint=run_fingerprint(cfg, accelerator.num_processes))
    accelerator.register_for_checkpointing(progress)
    if cfg.resume:
        resume_from_checkpoint(accelerator, cfg, output_dir, progress)
    if cfg.log_with:
        hparams = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in cfg.public_dict().items()}
        accelerator.init_trackers("fakeface", config=hparams)
    if accelerator.is_main_process:
        logger.info(
            "training %s (%s recipe) on %d images, %d validation, %d processes, %d steps/epoch, %d steps in all",
            cfg.model, recipe.name, n_train, len(data.val_loader.dataset), accelerator.num_processes,
            steps_per_epoch, total_steps,
        )
    return _Run(cfg, recipe, accelerator, output_dir, data, model, optimizer, scheduler, train_loader, val_loader,
                view_loaders, progress, ThroughputMeter(accelerator.num_processes), batches_per_epoch, total_steps,
                step_callback)


def _train_one_epoch(run: _Run) -> torch.Tensor:
    """One pass over the (remaining) training batches; returns this process's (loss sum, batches) on the device."""
    cfg, accelerator, model, progress = run.cfg, run.accelerator, run.model, run.progress
    loader = _epoch_loader(run)
    set_train_mode(model, run.recipe)
    bar = tqdm(total=run.batches_per_epoch, initial=progress.batches_done,
               desc=f"epoch {progress.epoch + 1}/{cfg.epochs}", disable=not accelerator.is_local_main_process,
               leave=False)
    # (loss sum, batches) of this process, kept on the device: no per-step host sync.
    sum_dtype = torch.float32 if accelerator.device.type == "mps" else torch.float64
    epoch_loss = torch.zeros(2, dtype=sum_dtype, device=accelerator.device)
    window_loss: list[torch.Tensor] = []
    run.meter.start_epoch()
    for batch in loader:
        run.meter.batch_arrived()
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
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad(set_to_none=True)
        progress.batches_done += 1
        window_loss.append(loss.detach())
        epoch_loss += torch.stack([loss.detach().to(sum_dtype), torch.ones((), dtype=sum_dtype, device=loss.device)])
        run.meter.batch_done(labels.shape[0])
        bar.update(1)
        if accelerator.sync_gradients:
            progress.global_step += 1
            window_loss, epoch_loss = _after_step(run, bar, window_loss, epoch_loss)
            if progress.global_step >= run.total_steps:
                break
        run.meter.fetching()
    run.meter.end_epoch()
    bar.close()
    return epoch_loss


def _epoch_loader(run: _Run) -> Any:
    """This epoch's shuffle and augmentation seeds set; batches already consumed (resume) skipped."""
    epoch = run.progress.epoch
    run.data.sampler.use_epoch(epoch)
    run.data.train_transform.epoch = epoch
    run.train_loader.set_epoch(epoch)
    if run.progress.batches_done:
        return run.accelerator.skip_first_batches(run.train_loader, run.progress.batches_done)
    return run.train_loader


def _after_step(run: _Run, bar: Any, window_loss: list, epoch_loss: torch.Tensor) -> tuple[list, torch.Tensor]:
    """After an optimizer step: log a window, call back, checkpoint every N steps. Returns the (reset) accumulators."""
    cfg, accelerator, progress = run.cfg, run.accelerator, run.progress
    epoch_done = progress.batches_done >= run.batches_per_epoch
    if progress.global_step % cfg.log_every == 0 or progress.batches_done == run.batches_per_epoch:
        # note: gather is a sync point; only every log_every steps
        mean_loss = accelerator.gather(torch.stack(window_loss).mean().reshape(1)).mean().item()
        window = run.meter.take_window()
        accelerator.log({"train/loss": mean_loss, "train/lr": run.scheduler.get_last_lr()[0],
                         "train/images_per_second": window["images_per_second"],
                         "train/loader_wait_fraction": window["loader_wait_fraction"],
                         "train/epoch": progress.epoch + progress.batches_done / run.batches_per_epoch},
                        step=progress.global_step)
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{window['images_per_second']:.1f}")
        window_loss = []
    if run.step_callback is not None:
        run.step_callback(progress)
    stop = progress.global_step >= run.total_steps
    if cfg.checkpoint_every and progress.global_step % cfg.checkpoint_every == 0 and not (stop or epoch_done):
        with run.meter.paused():
            epoch_loss = _fold_epoch_loss(accelerator, progress, epoch_loss)
            save_checkpoint(accelerator, run.output_dir, progress, cfg.keep_checkpoints)
    return window_loss, epoch_loss


def _end_epoch(run: _Run, epoch_loss: torch.Tensor) -> dict[str, Any]:
    """End of an epoch (or of the step budget): validate, keep the best model, log, checkpoint."""
    cfg, accelerator, progress = run.cfg, run.accelerator, run.progress
    epoch = progress.epoch
    validation = validate(accelerator, run.model, run.val_loader, cfg.channels_last)
    _fold_epoch_loss(accelerator, progress, epoch_loss)
    train_loss = progress.epoch_loss_sum / progress.epoch_loss_batches if progress.epoch_loss_batches else float("nan")
    progress.epoch_loss_sum, progress.epoch_loss_batches = 0.0, 0
    validation.update(epoch=epoch, step=progress.global_step, train_loss=train_loss)
    check_every_row_scored(validation, len(run.data.val_loader.dataset))
    view_aucs = selection_auc(accelerator, run.model, validation, run.view_loaders, cfg.channels_last)
    improved = is_improvement(validation, progress)
    if improved:
        progress.best_auc, progress.best_nll = validation["selection_auc"], validation["nll"]
        progress.best_epoch, progress.best_step = epoch, progress.global_step
        if accelerator.is_main_process:
            save_detector(accelerator.unwrap_model(run.model), checkpoint_root(run.output_dir) / BEST_DIR)
    views = {f"roc_auc_{c}": a for c, a in view_aucs.items() if c != "clean"}
    accelerator.log({"train/epoch_loss": train_loss, "val/roc_auc": validation["roc_auc"], "val/nll": validation["nll"],
                     "val/accuracy": validation["accuracy"], "val/ece": validation["ece"],
                     "val/selection_auc": validation["selection_auc"], **{f"val/{k}": a for k, a in views.items()}},
                    step=progress.global_step)
    progress.history.append({k: validation[k] for k in (*HISTORY_KEYS, *views)})
    if accelerator.is_main_process:
        text = "".join(f", {c} {a:.4f}" for c, a in view_aucs.items() if c != "clean")
        logger.info("epoch %d: validation AUC %.4f%s, NLL %.4f%s", epoch + 1, validation["roc_auc"], text,
                    validation["nll"], " (best so far)" if improved else "")
    progress.epoch += 1
    progress.batches_done = 0
    save_checkpoint(accelerator, run.output_dir, progress, cfg.keep_checkpoints)
    set_train_mode(run.model, run.recipe)
    return validation


def _fold_epoch_loss(accelerator: Any, progress: TrainingProgress, local: torch.Tensor) -> torch.Tensor:
    """Add every process's (loss sum, batches) into ``progress``; returns a zeroed local accumulator."""
    total = accelerator.reduce(local.clone(), reduction="sum").cpu()
    progress.epoch_loss_sum += float(total[0])
    progress.epoch_loss_batches += int(total[1])
    return torch.zeros_like(local)
