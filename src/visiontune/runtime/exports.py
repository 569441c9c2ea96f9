"""Which exported model a path names, ONNX or GGUF, and its runtime."""

from __future__ import annotations

from pathlib import Path

from .gguf import GgufVLM, gguf_export_files
from .vlm import OnnxVLM, export_folder


def export_root(path: str | Path) -> Path | None:
    """The export's folder for an ONNX export (its root or `onnx/`) or a GGUF export (its folder or one of its
    language model files), else None."""
    root = export_folder(path)
    if root is not None:
        return root
    files = gguf_export_files(path)
    return files[0].parent if files else None


def load_export_runtime(path: str | Path, dtype: str = "auto"):
    """An `OnnxVLM` (dtype: auto = fp32, int8, q4, fp16) or a `GgufVLM` (dtype: auto = f16, or the file's type,
    q8_0...) for an export, else None."""
    root = export_folder(path)
    if root is not None:
        return OnnxVLM(root, variant="fp32" if dtype == "auto" else dtype)
    files = gguf_export_files(path, dtype)
    if files is None:
        return None
    return GgufVLM(*files)
