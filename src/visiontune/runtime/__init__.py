"""Run an export without torch: `OnnxVLM` (onnxruntime + numpy + tokenizers + Pillow + jinja2), `GgufVLM`
(llama.cpp through llama-cpp-python) and `ExportPredictor`, which gives the same prediction rows as the PyTorch
`Predictor`."""

from .gguf import GgufVLM
from .vlm import OnnxVLM, export_folder

__all__ = ["GgufVLM", "OnnxVLM", "export_folder"]
