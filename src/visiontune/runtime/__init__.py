"""Run an ONNX export without torch: `OnnxVLM` (onnxruntime + numpy + tokenizers + Pillow + jinja2) and
`OnnxPredictor`, which gives the same prediction rows as the PyTorch `Predictor`."""

from .vlm import OnnxVLM, export_folder

__all__ = ["OnnxVLM", "export_folder"]
