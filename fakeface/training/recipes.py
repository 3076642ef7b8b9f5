"""How a detector is trained: the named recipes (protocol, augmentation, what is trainable, optimiser)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from fakeface.data.preprocess import Augmentation


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
    # Crop (native-crops) or resize (resize) side in pixels when --input-size is not given.
    input_size: int = 224


# The pieces the recipes share. How the image reaches the network: random native-resolution crops in training
# (never downscaled) with logits averaged over 5 fixed crops at test time, or the whole image squashed to the
# input size, one view. How it is trained (each recipe names its lr): the whole network with AdamW, warm-up and
# cosine decay, or a frozen backbone under its linear head with Adam at a constant rate.
_NATIVE_CROPS = dict(crop_protocol="native-crops", num_test_crops=5)
_SQUASHED = dict(crop_protocol="resize", num_test_crops=1)
_FULL_FINETUNE = dict(freeze_backbone=False, optimizer="adamw", weight_decay=0.02, schedule="cosine",
                      warmup_fraction=0.1)
_FROZEN_BACKBONE = dict(freeze_backbone=True, optimizer="adam", weight_decay=0.0, schedule="constant",
                        warmup_fraction=0.0)

RECIPES: dict[str, Recipe] = {
    "robust": Recipe(
        name="robust",
        **_NATIVE_CROPS,
        augmentation=Augmentation.robust(),
        **_FULL_FINETUNE, lr=2e-3,
        select_on=("clean", "jpeg75", "downscale0.5"),
        description=(
            "full fine-tune on native-resolution random crops (never downscaled), horizontal flips, "
            "Gaussian blur, JPEG re-encoding and random rescaling (Wang et al. 2020 style); "
            "evaluation averages logits over fixed test crops; the best epoch is chosen on the mean validation "
            "AUC of clean, JPEG q75 and 0.5x-downscaled copies"
        ),
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
        **_SQUASHED,
        augmentation=Augmentation.none(),
        **_FROZEN_BACKBONE, lr=1e-3,
        description=(
            "the original project's recipe: the whole image squash-resized, frozen backbone, "
            "linear softmax head (equivalent to a sigmoid output) trained with Adam, no augmentation"
        ),
    ),
}


def shortcut_control(p: float) -> Augmentation:
    """The real-faces benchmark's shortcut control as training augmentation, for real and fake alike.

    With probability ``p`` each: a 0.5-1x rescale and a JPEG re-encode at quality 60-95, so container
    format, size and JPEG tables stop telling the classes apart; plus flips.
    """
    return Augmentation(hflip_prob=0.5, jpeg_prob=p, jpeg_quality=(60, 95), rescale_prob=p, rescale_range=(0.5, 1.0))


# The real-faces benchmark's linear probe (probe/face/native/final/controls in results/real_faces.md):
# frozen ImageNet features (UnivFD-style), frozen backbone and optimiser as the seed recipe; the
# augmentation is the benchmark's shortcut control, for both classes: every image rescaled (0.5-1x) and
# re-encoded as JPEG at quality 60-95, so format, size and JPEG tables cannot decide. Meant for face crops (the default).
RECIPES["probe"] = replace(
    RECIPES["seed"],
    name="probe",
    crop_protocol="native-crops",
    num_test_crops=1,
    augmentation=shortcut_control(1.0),
    description=(
        "linear probe: frozen ImageNet backbone, linear head on its pooled features, trained on "
        "native-resolution crops under the shortcut control (every image rescaled 0.5-1x and re-encoded "
        "as JPEG q60-95, real and fake alike); evaluation on the centre crop at native resolution"
    ),
)
# The real-faces benchmark's default (finetune/mobilenetv2_100-imagenet in results/real_faces.md: best
# leave-one-family-out AUC there, narrowly): the whole network from ImageNet on face crops squashed to
# --input-size (112 in the benchmark), about half of the images under the shortcut control (rescaled
# 0.5-1x, re-encoded as JPEG q60-95, real and fake alike). train.py's default, on face crops at 112 px.
RECIPES["finetune"] = replace(
    RECIPES["robust"],
    name="finetune",
    **_SQUASHED,
    augmentation=shortcut_control(0.5),
    lr=1e-3,
    select_on=("clean",),
    # The size the real-faces benchmark measured (a face crop squashed to 112 px on 2 CPU cores).
    input_size=112,
    description=(
        "full fine-tune from ImageNet on the face crop squashed to the input size, flips, and the shortcut "
        "control on about half the images (rescaled 0.5-1x, re-encoded as JPEG q60-95, real and fake alike); "
        "AdamW 1e-3, warm-up + cosine"
    ),
)
# Pixel traces (benchmarks/traces.py, results/traces.md): the recipe that tells a real face from its own aligned
# twin (TAEF2 decoder, Real-ESRGAN upsampler). A generator's fingerprint is high-frequency, so the face crop is
# never resized (random native-resolution crops in training, logits averaged over 5 fixed crops at test time),
# and nothing that erases high frequencies is applied: no blur, no JPEG, no rescale, only flips. Twins share
# their real's size, container and JPEG tables, so the format shortcut the other recipes control for is absent
# by construction. Not robust to recompression as it stands (untested); not the default.
RECIPES["traces"] = replace(
    RECIPES["robust"],
    name="traces",
    augmentation=Augmentation(hflip_prob=0.5),
    lr=1e-3,
    select_on=("clean",),
    description=(
        "full fine-tune from ImageNet on native-resolution random crops of the face crop (never resized), "
        "flips only (no blur, JPEG or rescale, which erase generator traces); evaluation averages logits over "
        "5 fixed crops; AdamW 1e-3, warm-up + cosine"
    ),
)
