"""Checks before step one, on a sample of the data: nothing cut into image tokens, label mask covers
exactly the answer, and the largest batch runs forward + backward."""

from __future__ import annotations

import torch

from ..models.prompt_encoding import IGNORE_INDEX, VLMCollator, trained_text
from .vlm_trainer import answer_token_loss


class PreflightError(RuntimeError):
    pass


def run_preflight(model, collator: VLMCollator, dataset, batch_size: int, sample_size: int = 16, log=print) -> dict:
    count = min(len(dataset), sample_size)
    step = max(1, len(dataset) // count)
    indices = list(range(0, len(dataset), step))[:count]
    lengths, image_tokens, truncated = [], [], 0
    image_token_id = getattr(collator.processor, "image_token_id", None)
    examples = []
    for index in indices:
        example = dataset[index]
        examples.append(example)
        batch = collator([example])  # raises PromptTooLongError naming the example if image tokens would be cut
        labels = batch["labels"][0]
        answer_ids = labels[labels != IGNORE_INDEX]
        expected = trained_text(collator.processor, example["messages"], example["target"],
                                example.get("continuation") or ())
        decoded = collator.tokenizer.decode(answer_ids, skip_special_tokens=False)
        if decoded != expected:
            if expected.startswith(decoded) and collator.max_length is not None:
                truncated += 1
            else:
                raise PreflightError(f"{example['where']}: the label mask covers {decoded!r} but the answer is "
                                     f"{expected!r}; the tokenizer does not round-trip this chat template")
        lengths.append(int(batch["input_ids"].shape[1]))
        if image_token_id is not None:
            image_tokens.append(int((batch["input_ids"][0] == image_token_id).sum()))
    report = {"checked_examples": len(indices), "max_tokens": max(lengths), "mean_tokens": sum(lengths) / len(lengths),
              "image_tokens_per_example": max(image_tokens) if image_tokens else None, "truncated_answers": truncated}
    if truncated:
        log(f"pre-flight: {truncated}/{len(indices)} sampled answers are cut by --max-length {collator.max_length}")
    # The longest examples form the worst-case batch.
    longest = sorted(range(len(examples)), key=lambda i: -lengths[i])[:batch_size]
    batch = collator([examples[i] for i in longest])
    device = next(p for p in model.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    try:
        was_training = model.training
        model.train()
        loss, _ = answer_token_loss(model, batch)
        loss.backward()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    except torch.OutOfMemoryError as error:
        raise PreflightError(f"a batch of {len(longest)} of the longest examples ({max(lengths)} tokens) does not fit in "
                             f"memory; lower --batch-size (and raise --grad-accum), pass --gradient-checkpointing, "
                             f"or a smaller --image-size") from error
    if not torch.isfinite(loss):
        raise PreflightError(f"the first batch's loss is {loss.item()}; check --dtype and the data")
    report["first_batch_loss"] = round(float(loss.detach()), 4)
    log(f"pre-flight ok: {report['checked_examples']} examples, up to {report['max_tokens']} tokens "
        f"({report['image_tokens_per_example']} image tokens), first-batch loss {report['first_batch_loss']}")
    return report
