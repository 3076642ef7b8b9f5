"""The named recipes keep their values: training results (and results/) depend on every one of them."""
from __future__ import annotations

import dataclasses

from fakeface.training.recipes import RECIPES, Recipe

FIELDS = ("crop_protocol", "num_test_crops", "freeze_backbone", "optimizer", "lr", "weight_decay", "schedule",
          "warmup_fraction", "select_on", "input_size")
EXPECTED = {
    "robust": ("native-crops", 5, False, "adamw", 2e-3, 0.02, "cosine", 0.1, ("clean", "jpeg75", "downscale0.5"), 224),
    "seed": ("resize", 1, True, "adam", 1e-3, 0.0, "constant", 0.0, ("clean",), 224),
    "probe": ("native-crops", 1, True, "adam", 1e-3, 0.0, "constant", 0.0, ("clean",), 224),
    "finetune": ("resize", 1, False, "adamw", 1e-3, 0.02, "cosine", 0.1, ("clean",), 112),
    "traces": ("native-crops", 5, False, "adamw", 1e-3, 0.02, "cosine", 0.1, ("clean",), 224),
}
AUGMENTATION_FIELDS = ("hflip_prob", "blur_prob", "blur_sigma", "jpeg_prob", "jpeg_quality", "rescale_prob",
                       "rescale_range", "extra")
AUGMENTATIONS = {
    "robust": (0.5, 0.2, (0.1, 3.0), 0.3, (30, 100), 0.5, (0.5, 1.0), {}),
    "seed": (0.0, 0.0, (0.1, 3.0), 0.0, (30, 100), 0.0, (0.5, 1.0), {}),
    "probe": (0.5, 0.0, (0.1, 3.0), 1.0, (60, 95), 1.0, (0.5, 1.0), {}),
    "finetune": (0.5, 0.0, (0.1, 3.0), 0.5, (60, 95), 0.5, (0.5, 1.0), {}),
    "traces": (0.5, 0.0, (0.1, 3.0), 0.0, (30, 100), 0.0, (0.5, 1.0), {}),
}


def test_every_recipe_keeps_its_values():
    assert list(RECIPES) == list(EXPECTED)
    assert {field.name for field in dataclasses.fields(Recipe)} == {"name", "augmentation", "description", *FIELDS}
    for name, recipe in RECIPES.items():
        assert recipe.name == name
        assert {field: getattr(recipe, field) for field in FIELDS} == dict(zip(FIELDS, EXPECTED[name])), name
        augmentation = dataclasses.asdict(recipe.augmentation)
        assert augmentation == dict(zip(AUGMENTATION_FIELDS, AUGMENTATIONS[name])), name
        assert recipe.description.strip(), name
