"""Hugging Face `Trainer` with a loss that computes logits only where there are labels.

The vocabulary is tens of thousands wide and most positions are image and prompt tokens; rows are
left-padded so every answer ends at the last position, and `logits_to_keep` asks the model for the
last K positions only (K = longest answer in the batch + 1). Loss = summed token cross-entropy over
the number of answer tokens in the whole (gradient-accumulated, multi-device) batch; with per-example
weights (`--balance loss`) each example's tokens are scaled by its weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import Trainer

from ..models.prompt_encoding import IGNORE_INDEX
from ..models.vision_cache import IMAGE_KEYS


def answer_token_loss(model, inputs: dict, num_items_in_batch=None):
    inputs = dict(inputs)
    inputs.pop(IMAGE_KEYS, None)  # the feature cache's keys, when no cache replaced the pixels
    labels = inputs.pop("labels")
    weights = inputs.pop("example_weight", None)
    has_label = labels != IGNORE_INDEX
    # First labelled position over the batch; the logit predicting it sits one position earlier.
    first = int(torch.where(has_label.any(0))[0].min()) if has_label.any() else labels.shape[1] - 1
    keep = labels.shape[1] - first + 1
    outputs = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits[:, -keep:-1, :]
    targets = labels[:, first:].to(logits.device)
    token_loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                 ignore_index=IGNORE_INDEX, reduction="none").view(targets.shape)
    if weights is not None:
        token_loss = token_loss * weights.to(token_loss.device)[:, None]
    loss = token_loss.sum()
    count = num_items_in_batch if num_items_in_batch is not None else has_label[:, 1:].sum().clamp(min=1)
    return loss / count, outputs


SKIPPED_NAMED = 5  # skipped rows named in the summary


def weights_fingerprint(model) -> tuple:
    """A checksum of the trained weights (each trainable tensor's sum and sum of squares): what was computed
    with these weights can be reused while it stays the same (any optimizer step changes it)."""
    with torch.no_grad():
        sums = [torch.stack([p.float().sum(), p.float().square().sum()]).cpu()  # parts may sit on several devices
                for p in model.parameters() if p.requires_grad]
    return tuple(torch.stack(sums).double().flatten().tolist()) if sums else ()


class VLMTrainer(Trainer):
    """`sample_weights`: draw training examples with these weights (--balance sampler).
    `extra_eval`: model -> {name: value}, run after each evaluation and logged as eval_<name> (so
    `metric_for_best_model` can be e.g. eval_accuracy). `role_learning_rates`: {role: learning rate} for
    parts that train at another rate than the rest (e.g. a fresh projector beside LoRA). `feature_cache`: a
    `FeatureCache` that replaces the frozen vision part's work on images it has seen (training and evaluation).
    `lengths`: per-example lengths; batches are drawn from groups of similar length (transformers'
    `LengthGroupedSampler`: random megabatches, sorted inside), one process only."""

    def __init__(self, *args, throughput=None, sample_weights=None, extra_eval=None, role_learning_rates=None,
                 feature_cache=None, lengths=None, **kwargs):
        self.role_learning_rates = dict(role_learning_rates or {})
        self.feature_cache = feature_cache
        super().__init__(*args, **kwargs)
        self.throughput = throughput  # a ThroughputCallback that counts what is trained on
        self.sample_weights, self.extra_eval = sample_weights, extra_eval
        self.lengths = lengths  # per-example lengths: batches of similar lengths (--group-by-length)
        self.skipped_when_read: list[str] = []  # bad rows / images of a lazily read set, skipped (first few kept)
        self.skipped_count = 0
        self.last_evaluation: tuple[tuple, dict] | None = None  # (weights_fingerprint, metrics) of the last evaluate
        # Our loss is already normalised by the batch's answer-token count, so Trainer must not rescale it
        # for gradient accumulation.
        self.model_accepts_loss_kwargs = True

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        skipped = inputs.pop("skipped", None)
        if skipped:
            self.skipped_count += len(skipped)
            self.skipped_when_read += skipped[: max(0, SKIPPED_NAMED - len(self.skipped_when_read))]
        if model.training and self.throughput is not None:
            self.throughput.count_batch(inputs)
        if self.feature_cache is not None and IMAGE_KEYS in inputs:
            inputs = self.feature_cache.apply(model, dict(inputs))
        loss, outputs = answer_token_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages gradients; the count is global
        if model.training and self.throughput is not None:
            self.throughput.count_loss(loss)
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):
        if not self.role_learning_rates or self.optimizer is not None:
            return super().create_optimizer(model)
        from ..models.vlm import trained_parameters_by_role

        groups = []
        for role, parameters in trained_parameters_by_role(self.model).items():
            for decay in (True, False):  # biases and norms take no weight decay, as Trainer's own grouping does
                chosen = [p for p in parameters if (p.ndim >= 2) == decay]
                if chosen:
                    group = {"params": chosen, "weight_decay": self.args.weight_decay if decay else 0.0}
                    if role in self.role_learning_rates:
                        group["lr"] = self.role_learning_rates[role]
                    groups.append(group)
        optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
        self.optimizer = optimizer_class(groups, **optimizer_kwargs)
        return self.optimizer

    def _get_train_sampler(self, train_dataset=None):
        if self.lengths is not None and self.sample_weights is None and self.args.world_size == 1:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            generator = torch.Generator().manual_seed(self.args.data_seed if self.args.data_seed is not None
                                                      else self.args.seed)
            return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                        lengths=self.lengths, generator=generator)
        if self.sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        generator = torch.Generator().manual_seed(self.args.data_seed if self.args.data_seed is not None
                                                  else self.args.seed)
        return torch.utils.data.WeightedRandomSampler(self.sample_weights, num_samples=len(self.sample_weights),
                                                      replacement=True, generator=generator)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if self.extra_eval is not None and eval_dataset is None:
            was_training = self.model.training
            self.model.eval()
            extra = {f"{metric_key_prefix}_{k}": v for k, v in self.extra_eval(self.model).items()}
            self.model.train(was_training)
            metrics.update(extra)
            self.log(extra)
        if eval_dataset is None:
            self.last_evaluation = (weights_fingerprint(self.model), dict(metrics))
        return metrics
