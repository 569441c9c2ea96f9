"""Composed VLMs: a pretrained vision encoder + a causal LM + a trained projector (see build.compose)."""

from .registration import register_composed_vlm

__all__ = ["register_composed_vlm"]
