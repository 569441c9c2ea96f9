"""Hugging Face `Trainer` with a loss that computes logits only where there are labels.

The vocabulary is tens of thousands wide and most positions are image and prompt tokens; rows are
left-padded so every answer ends at the last position, and `logits_to_keep` asks the model for the
last K positions only (K = longest answer in the batch + 1). Loss = summed token cross-entropy over
the number of answer tokens in the whole (gradient-accumulated, multi-device) batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from .collator import IGNORE_INDEX


def answer_token_loss(model, inputs: dict, num_items_in_batch=None):
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    has_label = labels != IGNORE_INDEX
    # First labelled position over the batch; the logit predicting it sits one position earlier.
    first = int(torch.where(has_label.any(0))[0].min()) if has_label.any() else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1
    outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits[:, -keep:-1, :]
    targets = labels[:, first:].to(logits.device)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else has_label[:, 1:].sum().clamp(min=1)
    return loss / count, outputs


class VLMTrainer(Trainer):
    def __init__(self, *args, throughput=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.throughput = throughput  # a ThroughputCallback that counts what is trained on
        # Our loss is already normalised by the batch's answer-token count, so Trainer must not rescale it
        # for gradient accumulation.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training and self.throughput is not None:
            self.throughput.count_batch(inputs)
        loss, outputs = answer_token_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
        return (loss, outputs) if return_outputs else loss
