"""`OnnxPredictor`: the tasks' predictions (generate, classify's score mode) on an ONNX export, torch-free."""

from __future__ import annotations

from ..inference.base_predictor import BasePredictor
from ..tasks.classify.ranking import AnswerRanking
from .vlm import OnnxVLM


class OnnxClassScorer(AnswerRanking):
    """Score mode on the ONNX runtime: the prompt's cache repeated for each class (`OnnxVLM.answer_log_likelihoods`)."""

    def __init__(self, runtime: OnnxVLM, task, length_normalise: bool = False):
        super().__init__(task, runtime.end_ids, length_normalise)
        self.runtime = runtime

    def answer_text(self, messages: list[dict], target: str) -> str:
        return self.runtime.answer_suffix(messages, target)

    def tokenize(self, text: str) -> list[int]:
        return self.runtime.encode_text(text, special=False)

    def _score_batch(self, images: list, answers: list[list[int]]) -> list[list[float]]:
        messages = [self.task.messages() for _ in images]
        return self.runtime.answer_log_likelihoods(images, messages, answers).tolist()


class OnnxPredictor(BasePredictor):
    def __init__(self, runtime: OnnxVLM, task, batch_size: int = 8, max_new_tokens: int | None = None,
                 mode: str | None = None, top_k: int = 5, length_normalise: bool = False, **generation):
        super().__init__(task, batch_size, max_new_tokens, mode, top_k, length_normalise)
        unsupported = [k for k, v in generation.items() if v not in (None, False, 1, 1.0)]
        if unsupported:
            raise ValueError(f"the ONNX runtime decodes greedily; {', '.join(sorted(unsupported))} are not supported "
                             f"(use the PyTorch model for beam search or sampling)")
        self.runtime = runtime

    def generate(self, images: list, messages: list[list[dict]], with_scores: bool = False,
                 max_new_tokens: int | None = None) -> dict:
        if any(isinstance(image, (list, tuple)) for image in images):
            raise ValueError("the ONNX runtime takes one image per prompt")
        generated = self.runtime.generate(images, messages, max_new_tokens or self.max_new_tokens)
        return generated if with_scores else {"texts": generated["texts"]}

    def class_scorer(self, task) -> OnnxClassScorer:
        return OnnxClassScorer(self.runtime, task, self.length_normalise)
