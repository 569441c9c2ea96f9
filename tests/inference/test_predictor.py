"""The PyTorch predictor's two answers about one reply agree: the log-probabilities `generate` reports for its
greedy tokens equal what `score_answers` gives for the same tokens, and its pieces make the decoded reply."""

from __future__ import annotations

import pytest
from PIL import Image

from visiontune.inference.predictor import Predictor
from visiontune.models.vlm import load_for_inference
from visiontune.tasks import get_task


@pytest.mark.parametrize("family", ["smolvlm", "llava"])
def test_generated_log_probs_equal_the_scored_answer(tiny_models, shape_classes, family):
    model, processor, _ = load_for_inference(tiny_models[family], log=lambda *_: None)
    task = get_task("caption")
    predictor = Predictor(model, processor, task, max_new_tokens=10)
    images = [Image.open(f).convert("RGB") for f in sorted(shape_classes.rglob("*.png"))[:2]]
    messages = [task.messages() for _ in images]
    generated = predictor.generate(images, messages, with_scores=True)
    scored = predictor.score_answers(images, messages, generated["tokens"])
    for row, tokens, log_probs in zip(range(len(images)), generated["tokens"], generated["log_probs"]):
        assert len(tokens) == len(log_probs) > 0
        assert sum(log_probs) == pytest.approx(scored[row][row], abs=2e-3)  # its own reply, after its own prompt
        assert "".join(predictor.token_pieces(tokens)).strip() == generated["texts"][row]


def test_a_reply_stops_where_stop_when_says(tiny_models, shape_classes):
    model, processor, _ = load_for_inference(tiny_models["smolvlm"], log=lambda *_: None)
    task = get_task("caption")
    predictor = Predictor(model, processor, task, max_new_tokens=10)
    images = [Image.open(f).convert("RGB") for f in sorted(shape_classes.rglob("*.png"))[:2]]
    messages = [task.messages() for _ in images]
    full = predictor.generate(images, messages, with_scores=True)
    cut = predictor.generate(images, messages, with_scores=True, stop_when=lambda text: len(text) >= 4)
    for row in range(len(images)):
        n = len(cut["tokens"][row])
        assert len(predictor.processor.tokenizer.decode(cut["tokens"][row][:-1], skip_special_tokens=True)) < 4
        assert n < len(full["tokens"][row])  # the tiny model's replies run to the token limit
        assert cut["tokens"][row] == full["tokens"][row][:n]
        assert cut["log_probs"][row] == pytest.approx(full["log_probs"][row][:n], abs=1e-5)
