"""Classification on a composed VLM starts from a linear probe (LP-FT: linear probing, then fine-tuning).

On a few hundred images, logistic regression on the frozen encoder's [CLS, mean patch] features beats a VLM
trained by gradient descent through the whole language model, which must first discover that the image
tokens matter at all. A composed VLM's summary token is a linear map of exactly those features, so training
starts it from such a probe: scikit-learn logistic regression is fitted on the training images, and the map
is set so that the summary token is the probe's class logits spent on the class names' embeddings,
token = sum_c logit_c(image) * e_c (e_c: the mean input embedding of class c's name tokens). The language
model then reads a word-like token naming the probe's class, and fine-tuning starts from the probe's
knowledge instead of from chance.

Detection starts the same way with what a per-class query must decide first: which classes are in the image.
One binary logistic regression per class (present / absent) is fitted, and the token is
sum_c presence_logit_c(image) * e_c, so a query about an absent class reads a token that does not name it.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_PROBE_IMAGES = 20000  # a probe's accuracy saturates long before; bounds the feature pass on large sets
PROBE_C = 0.5  # inverse L2 strength of the probe (standardised features)


def _summary_maps(model) -> list:
    from ..models.compose.feature_map import FeatureMap

    return [module for name, module in model.named_modules()
            if isinstance(module, FeatureMap) and name.split(".")[-1] == "summary"]


def pixel_batches(processor, records, batch_size: int, device):
    """The records' images as the processor prepares them, `batch_size` at a time."""
    for start in range(0, len(records), batch_size):
        images = [record.load_image().convert("RGB") for record in records[start:start + batch_size]]
        yield processor.image_processor(images, return_tensors="pt")["pixel_values"].to(device)


@torch.no_grad()
def encoded_entries(base_model, processor, records, batch_size: int, cache=None,
                    looks: bool = True) -> dict[str, torch.Tensor]:
    """The encoder's outputs for each record, float32 on the CPU: `vision_patches`, `vision_summary`, and
    `vision_looks` when region slots take second looks (uncached, only with `looks`). With the run's feature
    `cache`, the outputs computed here are the ones training then reuses."""
    from ..models.vision_cache import IMAGE_KEYS, composed_outputs, pixel_unit_keys

    device, parts = next(base_model.parameters()).device, {}
    for pixels in pixel_batches(processor, records, batch_size, device):
        if cache is not None:
            encoded = cache.apply(base_model, {"pixel_values": pixels, IMAGE_KEYS: pixel_unit_keys(pixels)})
        else:
            encoded = composed_outputs(base_model, pixels, looks)
        for name, tensor in encoded.items():
            if name.startswith("vision_"):
                parts.setdefault(name, []).append(tensor.float().cpu())
    return {name: torch.cat(tensors) for name, tensors in parts.items()}


def encoded_images(base_model, processor, records, batch_size: int, cache=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch features, summary features) of the encoder for each record (see `encoded_entries`)."""
    entries = encoded_entries(base_model, processor, records, batch_size, cache, looks=False)
    return entries["vision_patches"], entries["vision_summary"]


@torch.no_grad()
def summary_features(base_model, summary_map, processor, records, batch_size: int, cache=None) -> np.ndarray:
    """The summary map's normalised inputs for each record (what its linear layer sees)."""
    _, summary = encoded_images(base_model, processor, records, batch_size, cache)
    return summary_map.norm(summary.to(summary_map.norm.weight.dtype)).float().numpy()


def class_name_embeddings(base_model, tokenizer, classes: list[str]) -> torch.Tensor:
    """(classes, LM width): the mean input embedding of each class name's tokens."""
    table = base_model.get_input_embeddings().weight
    rows = []
    for name in classes:
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        rows.append(table[torch.tensor(ids, device=table.device)].float().mean(0))
    return torch.stack(rows)


def _multiclass_probe(features: np.ndarray, labels: np.ndarray, classes: int,
                      c: float = PROBE_C) -> tuple[np.ndarray, np.ndarray, float]:
    """(weights (classes, dim), bias (classes,), training accuracy) of a softmax probe on standardised features."""
    from sklearn.linear_model import LogisticRegression

    probe = LogisticRegression(C=c, max_iter=1000).fit(features, labels)
    # Logits over all classes (a binary probe has one row; a class absent from the data gets a zero row).
    weights, bias = np.zeros((classes, features.shape[1])), np.zeros(classes)
    if len(probe.classes_) == 2:
        weights[probe.classes_[1]], bias[probe.classes_[1]] = probe.coef_[0], probe.intercept_[0]
    else:
        weights[probe.classes_], bias[probe.classes_] = probe.coef_, probe.intercept_
    return weights, bias, float(probe.score(features, labels))


def _presence_probe(features: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(weights, bias, mean per-class training accuracy) of one present/absent probe per class. A class that is
    in every (or no) training image gets a constant logit (+/-4) instead of a fit."""
    from sklearn.linear_model import LogisticRegression

    classes = present.shape[1]
    weights, bias, accuracies = np.zeros((classes, features.shape[1])), np.zeros(classes), []
    for index in range(classes):
        column = present[:, index]
        if column.min() == column.max():
            bias[index] = 4.0 if column[0] else -4.0
            accuracies.append(1.0)
            continue
        probe = LogisticRegression(C=PROBE_C, max_iter=1000).fit(features, column)
        weights[index], bias[index] = probe.coef_[0], probe.intercept_[0]
        accuracies.append(float(probe.score(features, column)))
    return weights, bias, float(np.mean(accuracies))


def start_summary_from_probe(model, processor, classes: list[str], records, targets: np.ndarray | None,
                             batch_size: int = 32, log=print, cache=None) -> dict | None:
    """Set the summary token's map from a probe fitted on `records`; returns what was done (None: not a
    composed VLM with a trained summary token, or nothing for a probe to learn). `targets`: one class index
    per record (a softmax probe), or a records x classes presence matrix (one present/absent probe per class),
    as the task's `probe_targets` gives them."""
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    maps = _summary_maps(model)
    if not getattr(base.config, "summary_token", False) or not maps:
        return None
    if not any(p.requires_grad for m in maps for p in m.parameters()):
        log("probe start skipped: the projector does not train (add connector to --train), so a probe-started "
            "summary token would not be saved")
        return None
    if targets is None:
        return None
    chosen, targets = records[:MAX_PROBE_IMAGES], np.asarray(targets)[:MAX_PROBE_IMAGES]
    was_training = model.training
    model.eval()
    features = summary_features(base, maps[0], processor, chosen, batch_size, cache)
    model.train(was_training)
    # One BLAS thread: numpy's OpenBLAS pool, once started with several threads, keeps competing with
    # torch's threads for the rest of training (detection steps measured 2.4x slower after a multi-threaded fit).
    with threadpool_limits(limits=1, user_api="blas"):
        scaler = StandardScaler().fit(features)
        standardised = scaler.transform(features)
        if targets.ndim == 1:
            weights, bias, train_accuracy = _multiclass_probe(standardised, targets, len(classes))
            what = "names the class a linear probe on"
        else:
            weights, bias, train_accuracy = _presence_probe(standardised, targets)
            what = "names the classes that per-class presence probes find on"
    # Fold the standardisation into the linear map: W (x - mu) / sigma + b.
    weights = weights / scaler.scale_
    bias = bias - weights @ scaler.mean_
    embeddings = class_name_embeddings(base, processor.tokenizer, classes)  # (classes, width)
    weight = embeddings.T @ torch.tensor(weights, dtype=torch.float32, device=embeddings.device)
    offset = embeddings.T @ torch.tensor(bias, dtype=torch.float32, device=embeddings.device)
    for summary_map in maps:
        summary_map.out.weight.data.copy_(weight.to(summary_map.out.weight))
        summary_map.out.bias.data.copy_(offset.to(summary_map.out.bias))
    log(f"probe start: the summary token now {what} {len(chosen)} training images picks "
        f"(probe training accuracy {train_accuracy:.3f})")
    return {"images": len(chosen), "probe_train_accuracy": round(train_accuracy, 4)}
