"""Detection on a composed VLM starts its region slots (`models/compose/regions.py`) from probes on the
training boxes, fitted before the first step on the frozen encoder's features:
- the box head: per patch (its features and its neighbourhood's), logistic regression for "an object's centre
  lies here" and ridge regression for that object's box (x1, y1, x2, y2, in patches from the patch's centre);
- the refine head: ridge regression from each chosen box's pooled features (the box, its quarters, the box
  grown by a quarter) to the corrections that move it onto its object;
- with second looks, the look refine head: ridge regression from each chosen box's look (the image cropped
  around it, through the encoder again) to the corrections that move it onto its object;
- the label classifier and the region token map: a softmax probe (`none` or the class) on what the slots read
  of each box they then choose on the training images (labelled by the object it boxes with IoU >= 0.5) and
  of every object's own box: its second look, or the patch features pooled over it. The classifier's argmax
  writes the slot's label; the region token is the probe's logits spent on the labels' embeddings, as the
  summary token's probe start does.
The heads stay as fitted (the slots compute them without gradients); the LM learns to answer from the slots.
`slot_readings` gives what the fitted slots then write on each training image, so the task can answer its
training queries with what the LM will see (`DetectTask.answers_from_slots`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..metrics.detection import MATCH_IOU, pairwise_iou
from .probe_start import (MAX_PROBE_IMAGES, _multiclass_probe, class_name_embeddings, encoded_entries,
                          encoded_images, pixel_batches)

OBJECTNESS_C = 0.05  # inverse L2 strength of the objectness probe (standardised features)
BOX_RIDGE = 300.0  # L2 strength of the box regression (standardised features); best held out of 30-3000
REFINE_IOU = 0.3  # slots the refine head learns from: those overlapping an object at least this much
REFINE_RIDGE = 1000.0  # held out of 100-10000: IoU >= 0.75 for 101 of 185 test objects (51 unrefined)
LOOK_REFINE_RIDGE = 1000.0  # held out on textured canvases: IoU >= 0.75 for 131 of 239 (100: 114; 10000: 121)
LABEL_C = 0.05  # of the label probe: held-out slot labels 0.71 right (0.66 at the summary probe's 0.5)


def _region_modules(model) -> list:
    """The projector's region slots (under LoRA, the original and the trained copy alike)."""
    from ..models.compose.regions import RegionSlots

    return [module for module in model.modules() if isinstance(module, RegionSlots)]


def cell_targets(objects: list[list[tuple[int, tuple]]], side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image and cell of a side x side grid (the patches): 1 where an object's centre lies (and that
    object's box as x1, y1, x2, y2 in cells from the cell's centre), else 0. `objects`: per image, (class, box in 0..1) pairs."""
    present = np.zeros((len(objects), side * side))
    offsets = np.zeros((len(objects), side * side, 4))
    for image, boxes in enumerate(objects):
        for _, (x1, y1, x2, y2) in boxes:
            column, row = min(int((x1 + x2) / 2 * side), side - 1), min(int((y1 + y2) / 2 * side), side - 1)
            centre = np.array([column + 0.5, row + 0.5] * 2) / side
            present[image, row * side + column] = 1
            offsets[image, row * side + column] = (np.array([x1, y1, x2, y2]) - centre) * side
    return present, offsets


def _fit_box_head(regions, patches: torch.Tensor, objects) -> float:
    """Objectness (logistic) and box (ridge) regressions on the patches' normalised box features, written into
    the box head; returns the objectness training accuracy."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    present, offsets = cell_targets(objects, regions.side)
    with torch.no_grad():
        features = regions.box_head.norm(regions.box_features(patches.to(regions.box_head.norm.weight.dtype)))
    features = features.float().numpy()
    features, present, offsets = features.reshape(-1, features.shape[-1]), present.reshape(-1), offsets.reshape(-1, 4)
    scaler = StandardScaler().fit(features)
    standard = scaler.transform(features)
    objectness = LogisticRegression(C=OBJECTNESS_C, max_iter=2000).fit(standard, present)
    boxes = Ridge(alpha=BOX_RIDGE).fit(standard[present > 0], offsets[present > 0])
    weights = np.concatenate([objectness.coef_, boxes.coef_]) / scaler.scale_
    bias = np.concatenate([objectness.intercept_, boxes.intercept_]) - weights @ scaler.mean_
    regions.box_head.out.weight.data.copy_(torch.tensor(weights, dtype=regions.box_head.out.weight.dtype))
    regions.box_head.out.bias.data.copy_(torch.tensor(bias, dtype=regions.box_head.out.bias.dtype))
    return float(objectness.score(standard, present))


def _corner_corrections(features: np.ndarray, chosen: torch.Tensor, units: np.ndarray, objects,
                        alpha: float) -> tuple[np.ndarray, np.ndarray, int] | None:
    """Ridge regression from each chosen box's features (images, K, F) to the moves of its corners onto its
    object's, in `units` (images, K, 4), over the slots that overlap an object (IoU >= REFINE_IOU): (weights,
    bias) on the raw features and how many slots it learnt from, or None with fewer than two."""
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    rows, targets = [], []
    for image, here in enumerate(objects):
        truth = np.array([box for _, box in here], dtype=np.float32).reshape(-1, 4)
        if not len(truth):
            continue
        boxes = chosen[image].numpy()
        overlaps = pairwise_iou(boxes, truth)
        for slot in np.flatnonzero(overlaps.max(1) >= REFINE_IOU):
            rows.append(features[image, slot])
            targets.append((truth[overlaps[slot].argmax()] - boxes[slot]) / units[image, slot])
    if len(rows) < 2:
        return None
    scaler = StandardScaler().fit(np.array(rows))
    ridge = Ridge(alpha=alpha).fit(scaler.transform(np.array(rows)), np.array(targets))
    weights = ridge.coef_ / scaler.scale_
    return weights, ridge.intercept_ - weights @ scaler.mean_, len(rows)


def _write_linear(heads: list, weights: np.ndarray, bias: np.ndarray) -> None:
    """A fitted linear map into each head's output layer (after its norm, which the first head's copies)."""
    with torch.no_grad():
        for head in heads:
            head.norm.load_state_dict(heads[0].norm.state_dict())
            head.out.weight.copy_(torch.tensor(weights, dtype=head.out.weight.dtype))
            head.out.bias.copy_(torch.tensor(bias, dtype=head.out.bias.dtype))


def _fit_refine_head(regions, patches: torch.Tensor, objects) -> int:
    """The refine head's corrections (in box sizes) from each chosen box's refine features, written into the
    head; returns how many training slots it learnt from."""
    from ..models.compose.regions import refine_features

    head = regions.refine_head
    with torch.no_grad():
        head.out.weight.zero_()
        head.out.bias.zero_()
        chosen = regions.chosen(patches.to(head.norm.weight.dtype))[0].float()
        features = head.norm(refine_features(patches.float(), chosen).to(head.norm.weight.dtype)).float().numpy()
    sizes = np.maximum((chosen[..., 2:] - chosen[..., :2]).numpy(), 1e-3)
    fitted = _corner_corrections(features, chosen, np.tile(sizes, 2), objects, REFINE_RIDGE)
    if fitted is None:
        return 0
    _write_linear([head], *fitted[:2])
    return fitted[2]


def _region_examples(slot_boxes: torch.Tensor, objects) -> tuple[np.ndarray, int]:
    """(labels 0 = none or 1 + class, objects boxed by a slot): each slot's box (images, K, 4), labelled by the
    object it boxes, then every object's own box, image by image."""
    labels, found = [], 0
    for image, here in enumerate(objects):
        truth = np.array([box for _, box in here], dtype=np.float32).reshape(-1, 4)
        boxes = slot_boxes[image].numpy()
        overlaps = pairwise_iou(boxes, truth) if len(truth) else np.zeros((len(boxes), 0))
        best = overlaps.argmax(1) if len(truth) else np.zeros(len(boxes), dtype=int)
        hit = overlaps.max(1) >= MATCH_IOU if len(truth) else np.zeros(len(boxes), dtype=bool)
        labels += [here[b][0] + 1 if h else 0 for b, h in zip(best, hit)] + [kind + 1 for kind, _ in here]
        found += len(set(best[hit].tolist()))
    return np.array(labels), found


def _fit_look_refine_head(modules, chosen: torch.Tensor, looks: torch.Tensor, objects) -> int:
    """The look refine head's corrections (in look window sides) from each chosen box's second look (images, K,
    features), written into every module's head; returns how many training slots it learnt from."""
    from ..models.compose.regions import look_sides

    head = modules[0].look_refine_head
    with torch.no_grad():
        features = head.norm(looks.to(head.norm.weight.dtype)).float().numpy()
    sides = look_sides(chosen).numpy()
    fitted = _corner_corrections(features, chosen, np.repeat(sides, 4, -1), objects, LOOK_REFINE_RIDGE)
    if fitted is None:
        return 0
    _write_linear([module.look_refine_head for module in modules], *fitted[:2])
    return fitted[2]


@torch.no_grad()
def _read_features(regions, base, processor, records, patches, boxes: list[torch.Tensor], batch_size: int,
                   chunk: int = 64) -> torch.Tensor:
    """What the slots read of each image's boxes, all images' rows in order: the patch features pooled over
    each box, or with second looks, each box's look features (`crop_features`; `chunk` crops a pass)."""
    from ..models.compose.regions import crop_windows, look_windows, pool_boxes

    if not regions.looks:
        return torch.cat([pool_boxes(patches[i:i + 1], here.unsqueeze(0))[0] for i, here in enumerate(boxes)])
    device, read = next(base.parameters()).device, []
    for start, pixels in zip(range(0, len(records), batch_size), pixel_batches(processor, records, batch_size, device)):
        windows = [look_windows(here.to(device)).unsqueeze(0) for here in boxes[start:start + len(pixels)]]
        crops = torch.cat([crop_windows(pixel.unsqueeze(0), window, pixel.shape[-1])[0]
                           for pixel, window in zip(pixels, windows)])
        read += [base.crop_features(crops[i:i + chunk]).float().cpu() for i in range(0, len(crops), chunk)]
    return torch.cat(read)


def _fit_region_probe(modules, base, tokenizer, classes, read: torch.Tensor, labels: np.ndarray) -> float:
    """The softmax probe on what the slots read of the boxes (`_read_features`), written into the label
    classifier (logits) and the region token map (logits spent on the labels' embeddings, centred, at unit RMS);
    returns its training accuracy."""
    from sklearn.preprocessing import StandardScaler

    regions = modules[0]
    with torch.no_grad():
        features = regions.region_map.norm(read.to(regions.region_map.norm.weight.dtype)).float().numpy()
    scaler = StandardScaler().fit(features)
    weights, bias, accuracy = _multiclass_probe(scaler.transform(features), labels, len(classes) + 1, c=LABEL_C)
    weights, bias = weights / scaler.scale_, bias - (weights / scaler.scale_) @ scaler.mean_
    weights, bias = weights - weights.mean(0), bias - bias.mean()  # logits are defined up to a shift
    scale = float(np.sqrt(np.mean((features @ weights.T + bias) ** 2))) or 1.0
    embeddings = class_name_embeddings(base, tokenizer, ["none", *classes])
    token_weight = embeddings.T @ torch.tensor(weights / scale, dtype=torch.float32, device=embeddings.device)
    token_bias = embeddings.T @ torch.tensor(bias / scale, dtype=torch.float32, device=embeddings.device)
    for module in modules:
        module.region_map.out.weight.data.copy_(token_weight.to(module.region_map.out.weight))
        module.region_map.out.bias.data.copy_(token_bias.to(module.region_map.out.bias))
        module.label_head.norm.load_state_dict(regions.region_map.norm.state_dict())
        module.label_head.out.weight.data.copy_(torch.tensor(weights, dtype=module.label_head.out.weight.dtype))
        module.label_head.out.bias.data.copy_(torch.tensor(bias, dtype=module.label_head.out.bias.dtype))
    return accuracy


def start_regions_from_probe(model, processor, classes: list[str], records, objects_of, batch_size: int = 32,
                             log=print, cache=None) -> dict | None:
    """Fit a composed VLM's region slots on the training boxes (see the module docstring). `objects_of(records)`:
    per record, (class index, box in 0..1) pairs (the task's `region_targets`). None: no region slots."""
    from threadpoolctl import threadpool_limits

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    modules = _region_modules(model)
    objects = objects_of(records) if modules else None
    if not objects:
        return None
    chosen = records[:MAX_PROBE_IMAGES // base.config.token_grid_side ** 2]
    objects = objects[: len(chosen)]
    was_training = model.training
    model.eval()
    # Second looks crop the boxes the heads fitted here choose: a cache entry made now would hold unfitted looks.
    patches, _ = encoded_images(base, processor, chosen, batch_size, None if modules[0].looks else cache)
    # One BLAS thread: see start_summary_from_probe.
    with threadpool_limits(limits=1, user_api="blas"):
        objectness_accuracy = _fit_box_head(modules[0], patches, objects)
        _fit_refine_head(modules[0], patches, objects)
        for module in modules[1:]:
            module.box_head.load_state_dict(modules[0].box_head.state_dict())
            module.refine_head.load_state_dict(modules[0].refine_head.state_dict())
        with torch.no_grad():
            slot_boxes = modules[0].chosen(patches.to(modules[0].box_head.norm.weight.dtype))[0].float()
        truths = [torch.tensor([box for _, box in here], dtype=torch.float32).reshape(-1, 4) for here in objects]
        every = [torch.cat([slots, truth]) for slots, truth in zip(slot_boxes, truths)]
        read = _read_features(modules[0], base, processor, chosen, patches, every, batch_size)
        if modules[0].looks:  # the slots' looks move their boxes once more; the labels are then those boxes'
            per_image = read.split([len(boxes) for boxes in every])
            looks = torch.stack([rows[:slot_boxes.shape[1]] for rows in per_image])
            _fit_look_refine_head(modules, slot_boxes, looks, objects)
            with torch.no_grad():
                slot_boxes = modules[0].look_refined(slot_boxes, looks)
        labels, found = _region_examples(slot_boxes, objects)
        read = read[:, :modules[0].read_width]
        probe_accuracy = _fit_region_probe(modules, base, processor.tokenizer, classes, read, labels)
    model.train(was_training)
    total = sum(len(here) for here in objects)
    log(f"probe start: region slots fitted on {len(chosen)} training images (objectness accuracy "
        f"{objectness_accuracy:.3f}; {found}/{total} objects boxed by a slot at IoU >= {MATCH_IOU}; labels "
        f"{probe_accuracy:.3f})")
    return {"images": len(chosen), "objects": total, "boxed": found,
            "objectness_train_accuracy": round(objectness_accuracy, 4), "label_train_accuracy": round(probe_accuracy, 4)}


def slot_readings(model, processor, records, batch_size: int = 32, cache=None, chunk: int = 256) -> list[list[tuple]]:
    """What the fitted region slots write after each record's image: per slot, (class index, or -1 for `none`;
    the box as x1, y1, x2, y2 in 0..1; the box on the slots' grid, as its text writes it). Empty lists when the
    model has no region slots."""
    modules = _region_modules(model)
    if not modules:
        return [[] for _ in records]
    regions, base = modules[0], model.get_base_model() if hasattr(model, "get_base_model") else model
    dtype = regions.box_head.norm.weight.dtype
    was_training = model.training
    model.eval()
    readings = []
    for start in range(0, len(records), chunk):  # bounded memory on large sets
        encoded = encoded_entries(base, processor, records[start:start + chunk], batch_size, cache)
        with torch.no_grad():
            patches = encoded["vision_patches"].to(dtype)
            boxes, gates = regions.chosen(patches)
            looks = encoded.get("vision_looks")
            looks = looks.to(dtype) if looks is not None else None
            labels = regions.labels(regions.read_features(patches, boxes, looks), gates) - 1
            boxes = regions.look_refined(boxes, looks)
            grid_boxes = torch.round(boxes * regions.grid).long()
        readings += [[(int(label), tuple(box), tuple(grid)) for label, box, grid in
                      zip(labels[i].tolist(), boxes[i].tolist(), grid_boxes[i].tolist())] for i in range(len(patches))]
    model.train(was_training)
    return readings
