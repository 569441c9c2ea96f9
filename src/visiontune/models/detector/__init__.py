"""The dedicated detector: frozen ViT backbone (+ optional LoRA) -> simple feature pyramid ->
Mix-FFN neck -> one-to-one head trained with Hungarian assignment; inference is NMS-free top-k.

`model.Detector` is the entry point (`create`, `from_pretrained`, `predict`, `save_pretrained`); `train`,
`evaluation` and `export` back the `visiontune detector` commands; `deploy/onnx_detector.py` runs an export
without torch."""
