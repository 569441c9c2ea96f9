"""Self-replay's soft targets: the model's own earlier distribution at each answer token, placed at exactly the
trained positions by the collator and trained towards with cross-entropy by the loss."""

import torch
from PIL import Image

from visiontune.models.prompt_encoding import IGNORE_INDEX, VLMCollator
from visiontune.models.vlm import load_for_inference
from visiontune.tasks import get_task
from visiontune.training.vlm_trainer import answer_token_loss

QUIET = {"log": lambda *_: None}


def _examples(processor, soft_target=None) -> list[dict]:
    """Two captions; the first with `soft_target(processor, messages, target)` when given."""
    messages = get_task("caption").messages()
    examples = [{"image": Image.new("RGB", (60, 60), (200, 0, 0)), "messages": messages, "target": "a red square"},
                {"image": Image.new("RGB", (60, 60), (0, 0, 200)), "messages": messages, "target": "blue"}]
    if soft_target is not None:
        examples[0]["soft_target"] = soft_target(processor, messages, examples[0]["target"])
    return examples


def _batch(processor, soft_target=None):
    return VLMCollator(processor)(_examples(processor, soft_target))


def _one_hot_of_answer(processor, messages, target, shift=0):
    """Soft targets that put all the mass on the answer's own tokens (+ `shift` ids)."""
    batch = VLMCollator(processor)([{"image": Image.new("RGB", (60, 60)), "messages": messages, "target": target}])
    answer = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX]
    ids = torch.stack([answer + shift, answer + shift + 1], dim=1)
    return ids, torch.tensor([[1.0, 0.0]]).expand(len(answer), 2)


def test_soft_targets_sit_at_the_trained_tokens_of_their_example_only(tiny_models):
    _, processor, _ = load_for_inference(tiny_models["smolvlm"], **QUIET)
    batch = _batch(processor, _one_hot_of_answer)
    has_soft = batch["soft_probs"].sum(-1) > 0
    assert torch.equal(has_soft[0], batch["labels"][0] != IGNORE_INDEX) and not has_soft[1].any()
    assert torch.equal(batch["soft_ids"][0, :, 0][has_soft[0]], batch["labels"][0][has_soft[0]])


def test_the_loss_trains_towards_the_soft_targets_where_there_are_some(tiny_models):
    model, processor, _ = load_for_inference(tiny_models["smolvlm"], **QUIET)
    with torch.no_grad():
        hard, _ = answer_token_loss(model, _batch(processor))
        same, _ = answer_token_loss(model, _batch(processor, _one_hot_of_answer))
        other, _ = answer_token_loss(model, _batch(processor, lambda *a: _one_hot_of_answer(*a, shift=1)))
    assert torch.isclose(same, hard, atol=1e-5)  # one-hot soft targets on the answer = the answer's tokens
    assert not torch.isclose(other, hard, atol=1e-3)
