"""``train.py --recipe R --model M --input-size S`` on in-memory images, for benchmarks: one definition.

The traces check and the generalisation benchmark both need a row to be exactly what the product would train
(its recipe's preprocessing, augmentation, optimiser and schedule, through ``fakeface.training``), minus the
release machinery: a fixed number of epochs, classes balanced by loss weights as the training loop does, no
best-epoch selection. The scorer returns the logit margin (fake minus real) averaged over the recipe's test crops.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable

import numpy as np
from PIL import Image

__all__ = ["fit_product_recipe"]


def fit_product_recipe(recipe: str, train: list[Image.Image], labels: np.ndarray, *, model: str = "mobilenetv2_100",
                       input_size: int | None = None, epochs: int, batch_size: int, seed: int,
                       threads: int | None = None) -> tuple[Callable[[list[Image.Image]], np.ndarray], dict[str, Any]]:
    """Train from the offline pretrained start; returns (scorer, facts). ``input_size`` None: the recipe's own."""
    import torch

    from fakeface.data.preprocess import build_eval_transform, build_train_transform
    from fakeface.training.config import TrainingConfig
    from fakeface.training.model import build_optimizer, build_scheduler, create_training_model, set_train_mode

    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)
    cfg = TrainingConfig(dataset=None, output_dir="unused", recipe=recipe, model=model, pretrained=True,
                         face_crop=False, epochs=epochs, batch_size=batch_size, seed=seed, input_size=input_size)
    spec, pp = cfg.resolved_recipe(), cfg.build_preprocessing()
    network = create_training_model(cfg)
    optimizer = build_optimizer(network, cfg)
    scheduler = build_scheduler(optimizer, spec, epochs * -(-len(train) // batch_size))
    weight = torch.tensor([len(labels) / (2 * max(1, (labels == c).sum())) for c in (0, 1)], dtype=torch.float32)
    rng = random.Random(seed)
    transform = build_train_transform(pp, spec.augmentation, rng=rng)
    start = time.perf_counter()
    set_train_mode(network, spec)
    for _ in range(epochs):
        order = np.random.default_rng(rng.randrange(2**32)).permutation(len(train))
        for i in range(0, len(order), batch_size):
            chunk = order[i:i + batch_size]
            x = torch.stack([transform(train[j]) for j in chunk])                   # (B, 3, S, S)
            loss = torch.nn.functional.cross_entropy(network(x), torch.from_numpy(labels[chunk]), weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    train_seconds = time.perf_counter() - start
    network.eval()
    evaluate = build_eval_transform(pp)
    per_image: list[float] = []

    def score(images: list[Image.Image]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for image in images:
                t = time.perf_counter()
                logits = network(evaluate(image)).mean(0)                           # (K crops, 2) -> (2,)
                per_image.append(time.perf_counter() - t)
                out.append(float(logits[1] - logits[0]))
        return np.array(out)

    facts = {"recipe": spec.name, "model": model, "description": spec.description, "crop_protocol": pp.crop_protocol,
             "input_size": pp.crop_size[0], "test_crops": pp.crops_per_image, "epochs": epochs,
             "train_images": len(train), "train_seconds": train_seconds,
             "train_images_per_s": len(train) * epochs / max(train_seconds, 1e-9), "score_seconds": per_image}
    return score, facts
