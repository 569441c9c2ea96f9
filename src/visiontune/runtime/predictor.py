"""`ExportPredictor`: the predictor contract (`inference/protocol.py`) on an exported model, torch-free: an
ONNX export (`OnnxVLM`, onnxruntime) or a GGUF export (`GgufVLM`, llama.cpp)."""

from __future__ import annotations

from typing import Callable

from ..inference.base_predictor import BasePredictor


class ExportPredictor(BasePredictor):
    def __init__(self, runtime, task, batch_size: int = 8, max_new_tokens: int | None = None,
                 mode: str | None = None, **generation):
        super().__init__(task, batch_size, max_new_tokens, mode)
        unsupported = [k for k, v in generation.items() if v not in (None, False, 1, 1.0)]
        if unsupported:
            raise ValueError(f"the {runtime.name} runtime decodes greedily by default; {', '.join(sorted(unsupported))} "
                             f"are not supported as defaults (use the PyTorch model for beam search; a served export "
                             f"samples per request)")
        self.runtime = runtime
        self.end_ids = runtime.end_ids

    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False,
                 max_new_tokens: int | None = None, stop_when: Callable[[str], bool] | None = None,
                 sampling=None, on_token: Callable[[int, int], None] | None = None) -> dict:
        if any(isinstance(image, (list, tuple)) for image in images):
            raise ValueError(f"the {self.runtime.name} runtime takes one image per prompt")
        generated = self.runtime.generate(images, messages, max_new_tokens or self.max_new_tokens, stop_when,
                                          sampling, on_token)
        return generated if with_scores else {"texts": generated["texts"]}

    def token_pieces(self, tokens: list[int]) -> list[str]:
        return self.runtime.token_pieces(tokens)

    def answer_tokens(self, messages: list[dict], target: str) -> list[int]:
        return self.runtime.answer_tokens(messages, target)

    def score_answers(self, images: list, messages: list[list[dict]], answers: list[list[int]]) -> list[list[float]]:
        return self.runtime.answer_log_likelihoods(images, messages, answers).tolist()
