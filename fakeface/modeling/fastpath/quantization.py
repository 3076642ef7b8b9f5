"""Static int8 quantization of the exported graph, and the proof that it cannot saturate.

Why static int8 (QDQ, per-channel weights, uint8 activations) and why 7-bit
weights: see the package docstring and ``docs/performance.md``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from fakeface.modeling.fastpath._common import INPUT_NAME, import_onnxruntime, quiet_exporter_logs
from fakeface.modeling.inference import Detector

QUANTIZATION_METHOD = ("onnxruntime static int8, QDQ, per-channel 7-bit weights (s8, reduce_range), uint8 activations, "
                       "MinMax calibration")
_CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class QuantizationSettings:
    """The integer types of a static int8 export (onnxruntime ``QuantType`` names).

    ``reduce_range`` quantizes weights to 7 bits ([-64, 64]). x86 CPUs without
    VNNI multiply u8 activations by s8 weights with ``vpmaddubsw``, which adds
    two products into a saturating int16: 2 * 255 * 127 = 64770 overflows
    32767, 2 * 255 * 64 = 32640 cannot. See :func:`check_no_saturation`.
    """

    activation_type: str = "QUInt8"
    weight_type: str = "QInt8"
    reduce_range: bool = True

    def __post_init__(self) -> None:
        for name in ("activation_type", "weight_type"):
            if getattr(self, name) not in ("QUInt8", "QInt8"):
                raise ValueError(f"{name} must be 'QUInt8' or 'QInt8', got {getattr(self, name)!r}")


DEFAULT_QUANTIZATION = QuantizationSettings()


class _CropsReader:
    """Calibration data: ``Detector.prepare`` outputs, a few images per batch."""

    def __init__(self, detector: Detector, images: Sequence[Image.Image], batch_size: int = _CALIBRATION_BATCH):
        self._batches: Iterator[list[Image.Image]] = (
            list(images[i:i + batch_size]) for i in range(0, len(images), batch_size)
        )
        self._detector = detector

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        return {INPUT_NAME: self._detector.prepare(batch).numpy()}


def quantize_onnx(fp32_path: str | os.PathLike, int8_path: str | os.PathLike, detector: Detector,
                  calibration_images: Sequence[Image.Image], *, quant_format: str = "QDQ",
                  keep_stem_fp32: bool = True, settings: QuantizationSettings | None = None) -> Path:
    """Static int8 quantization of an exported graph, calibrated on ``calibration_images``.

    ``quant_format`` "QDQ" (what releases ship) or "QOperator" (kept so the
    benchmark can show the choice was measured). ``keep_stem_fp32`` leaves
    the convolution(s) on the input in fp32 (see :func:`find_input_convs`).
    ``settings`` default to :data:`DEFAULT_QUANTIZATION` (cannot saturate on AVX2).
    """
    import_onnxruntime()
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CropsReader, CalibrationDataReader):
        pass

    settings = settings or DEFAULT_QUANTIZATION
    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    prepared = fp32_path.with_name(fp32_path.stem + ".pre.onnx")
    with quiet_exporter_logs():
        # Shape inference + graph cleanup first, as onnxruntime recommends for static quantization.
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=False)
        quantize_static(
            os.fspath(prepared), os.fspath(int8_path), Reader(detector, calibration_images),
            quant_format=QuantFormat[quant_format], per_channel=True, reduce_range=settings.reduce_range,
            activation_type=QuantType[settings.activation_type], weight_type=QuantType[settings.weight_type],
            nodes_to_exclude=find_input_convs(prepared) if keep_stem_fp32 else None,
            extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
        )
    return int8_path


def find_input_convs(path: str | os.PathLike) -> list[str]:
    """Names of the Conv nodes that read the graph input (through shape-only ops such as Reshape).

    They may have to stay fp32: quantizing the normalised pixels to 8 bits
    with one scale for all three channels is coarser than the pixels
    themselves, and rounds away exactly the pixel-level traces a generator
    leaves. Measured on the synthetic test split: a trained MobileNetV2 lost
    0.0056 AUC with its input convolution in int8 and none with it in fp32;
    a ResNet50 lost nothing either way, and its 7x7 stem in fp32 costs about
    a quarter of its int8 time. Hence export_fast_path tries all-int8 first.
    """
    import onnx

    graph = onnx.load(os.fspath(path), load_external_data=False).graph
    passthrough = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Cast", "Transpose"}
    reached = {i.name for i in graph.input}
    names = []
    for node in graph.node:  # ONNX nodes are stored in topological order
        if not any(name in reached for name in node.input):
            continue
        if node.op_type == "Conv":
            names.append(node.name)
        elif node.op_type in passthrough:
            reached.update(node.output)
    return names


# vpmaddubsw (x86 without VNNI) adds two u8 x s8 products into a saturating int16.
_INT16_MAX = 32767
_U8_MAX = 255
_GEMM_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# QOperator graphs carry the weight as an input of the integer op itself: op -> index of the weight.
_INTEGER_OPS = {"QLinearConv": 3, "QLinearMatMul": 3, "ConvInteger": 1, "MatMulInteger": 1}


@dataclass(frozen=True)
class SaturationCheck:
    """Whether an int8 graph can overflow the int16 pair sums of ``vpmaddubsw`` (x86 without VNNI).

    ``worst_pair_sum`` = 2 * 255 * the largest |weight - zero point| of any
    quantized Conv/Gemm/MatMul. The activation operand is taken at its u8
    maximum whatever its type: onnxruntime runs s8 activations through the
    same u8 kernels by flipping their sign bit. It is an upper bound, so a graph
    that passes cannot saturate on any CPU; ``layers`` says how many were checked.
    """

    ok: bool
    worst_pair_sum: int
    layers: int
    worst_layer: str | None
    limit: int = _INT16_MAX


def check_no_saturation(path: str | os.PathLike) -> SaturationCheck:
    """Read the quantized weights out of an int8 ONNX graph and bound its int16 pair sums."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(os.fspath(path)).graph
    initializers = {init.name: init for init in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}

    def int_weight(name: str, zero_point: str | None, axis: int) -> np.ndarray | None:
        init = initializers.get(name)
        if init is None or init.data_type not in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            return None
        values = numpy_helper.to_array(init).astype(np.int32)
        if zero_point and zero_point in initializers:
            zp = numpy_helper.to_array(initializers[zero_point]).astype(np.int32)
            if zp.size > 1:  # per channel, along ``axis``
                values = np.moveaxis(np.moveaxis(values, axis, -1) - zp.reshape(-1), -1, axis)
            else:
                values = values - int(zp.reshape(-1)[0])
        return values

    worst, worst_layer, layers = 0, None, 0
    for node in graph.node:
        weight = None
        if node.op_type in _GEMM_OPS and len(node.input) > 1:
            source = producers.get(node.input[1])
            if source is not None and source.op_type == "DequantizeLinear":
                axis = next((a.i for a in source.attribute if a.name == "axis"), 1)
                weight = int_weight(source.input[0], source.input[2] if len(source.input) > 2 else None, axis)
        elif node.op_type in _INTEGER_OPS:
            index = _INTEGER_OPS[node.op_type]
            zp_index = index + 2 if node.op_type.startswith("QLinear") else 3
            weight = int_weight(node.input[index], node.input[zp_index] if len(node.input) > zp_index else None, 0)
        if weight is None or not weight.size:
            continue
        layers += 1
        pair_sum = 2 * _U8_MAX * int(np.abs(weight).max())
        if pair_sum > worst:
            worst, worst_layer = pair_sum, node.name
    return SaturationCheck(ok=worst <= _INT16_MAX, worst_pair_sum=worst, layers=layers, worst_layer=worst_layer)
