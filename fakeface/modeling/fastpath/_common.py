"""What every stage of the fast path shares: file names and format, the optional dependency,
the CPU's instruction sets, the weights' fingerprint and the release files' hashes."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from fakeface.modeling.detector import CONFIG_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from torch import nn

FAST_MODEL_NAME = "model.int8.onnx"
# The exported fp32 graph, shipped instead of the int8 one when int8 cannot be proven within the AUC budget:
# it scores as the torch model does (to float rounding) and still serves without torch, off the GIL.
FAST_FP32_NAME = "model.fp32.onnx"
FAST_GRAPH_NAMES = {"int8": FAST_MODEL_NAME, "fp32": FAST_FP32_NAME}
FAST_INFO_NAME = "fastpath.json"
FAST_REFERENCE_NAME = "fastpath_reference.npz"
# 2: 7-bit weights (cannot saturate on AVX2), reference inputs checked at load.
FAST_PATH_FORMAT = 2
INPUT_NAME = "crops"
OUTPUT_NAME = "logits"
# Instruction sets recorded beside measurements (and used to decide whether a
# graph that could saturate is safe here: VNNI accumulates in int32).
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "avx_vnni_int8", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni")


class FastPathUnavailable(RuntimeError):
    """The fast path cannot be built here (e.g. onnxruntime or onnx is not installed)."""


def graph_precision(info: dict | None) -> str:
    """``"int8"`` or ``"fp32"``: which graph a ``fastpath.json`` describes (releases before fp32 graphs: int8)."""
    precision = (info or {}).get("precision", "int8")
    if precision not in FAST_GRAPH_NAMES:
        raise ValueError(f"unknown graph precision {precision!r}; this version reads {sorted(FAST_GRAPH_NAMES)}")
    return precision


def import_onnxruntime():
    """``onnxruntime``, or :class:`FastPathUnavailable` saying how to install it."""
    try:
        import onnxruntime
    except ImportError as error:
        raise FastPathUnavailable(
            "onnxruntime is not installed; install the pinned version from requirements.txt for the int8 fast path"
        ) from error
    return onnxruntime


@contextlib.contextmanager
def quiet_exporter_logs() -> Iterator[None]:
    """The exporter's optimizer logs every rewrite at INFO; training logs at INFO."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def cpu_instruction_sets(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> tuple[str, ...]:
    """The x86 instruction sets of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return tuple(f for f in CPU_FLAGS if f in flags)


def compute_weights_fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, values).

    Recorded at export and checked at load, so an ONNX file left over from
    other weights (retrained, or a partly updated repo) is never served.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def release_files_sha256(folder: str | os.PathLike) -> dict[str, str] | None:
    """sha256 of a release folder's ``config.json`` and ``model.safetensors`` (None when either is missing).

    Recorded at export when those files load to exactly the exported model; the same files at load prove the
    graph was made from these weights and this preprocessing before the torch model is built.
    """
    paths = [Path(folder) / CONFIG_NAME, Path(folder) / WEIGHTS_NAME]
    if not all(path.is_file() for path in paths):
        return None
    hashes = {}
    for path in paths:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(2**20), b""):
                digest.update(block)
        hashes[path.name] = digest.hexdigest()
    return hashes


@contextlib.contextmanager
def revouch_release_files(folder: str | os.PathLike) -> Iterator[None]:
    """Around a rewrite of a release's config.json that keeps its weights and preprocessing (a new decision, a
    panel entry): a graph that vouched for the old files (``fastpath.json``'s ``files_sha256``) vouches for the
    new ones. Nothing changes when it did not vouch before, or when the weights or preprocessing changed."""
    import json

    from fakeface.data.preprocess import resolve_preprocessing
    from fakeface.modeling.detector import read_detector_config
    from fakeface.utils.fileio import write_atomic

    info_path = Path(folder) / FAST_INFO_NAME
    try:
        info = json.loads(info_path.read_text())
        vouched = (info.get("source") or {}).get("files_sha256")
        before = release_files_sha256(folder)
        preprocessing = resolve_preprocessing(read_detector_config(folder))
    except (OSError, ValueError, AttributeError):
        info, vouched, before, preprocessing = None, None, None, None
    yield
    if not vouched or vouched != before:
        return
    after = release_files_sha256(folder)
    if (after is None or after[WEIGHTS_NAME] != before[WEIGHTS_NAME]
            or resolve_preprocessing(read_detector_config(folder)) != preprocessing):
        return
    info["source"]["files_sha256"] = after
    write_atomic(info_path, (json.dumps(info, indent=2) + "\n").encode())
