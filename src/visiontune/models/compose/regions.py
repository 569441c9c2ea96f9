"""Region slots: what the image's cells find, written as text right after the image, for the LM to answer from.

A language model that must write a box as digits learns it by regression through digit tokens, which a few
hundred examples do not teach (a composed VLM fine-tuned that way writes the training set's average box on
every image). Here a box head on each patch (objectness + the box, from the patch's features and the mean of
its 3 x 3 neighbourhood) picks the `region_slots` most object-like patches, one per object; each becomes a slot
of three parts:
- a region token: the patch features pooled over the patch's box, through a linear map;
- a label, `<class>:` or `none:`, from a classifier on the same pooled features (`region_labels` lists the
  labels' token ids; a repeated or unlikely box is `none:`);
- the box, `[x1,y1,x2,y2]` on the 0..region_grid grid the detect task writes answers on, padded after `]`.
So a slot reads like a line of a detection answer, `Sneaker: [12,40,18,61]`, and the LM learns to answer
"Detect every Sneaker" by copying the Sneaker lines (or `none`), which a pretrained LM does almost at once.
With `region_looks` (the second look), the region token and the label read each chosen box again instead: the
encoder's [CLS, mean patch] features of the image cropped around the box and resized to the encoder's input
size, where an 18-48 px object fills the view rather than one or two patches of the whole image; a third head
moves each box once more from the look's patches, seen that close. The heads are probes fitted on the training
boxes before fine-tuning (`training/region_start.py`); the LM's loss does not move them. The label and box text
are the LM's own token embeddings. Fixed shapes and tensor arithmetic only, so the slots trace into the ONNX
vision graph as they are.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from .feature_map import FeatureMap

OPEN, COMMA, CLOSE, PAD = 10, 11, 12, 13  # text pieces after the ten digits (config.region_text_ids)
PIECES = 14
# Below this objectness (and for a box that repeats a chosen one) a slot's label is `none:`; otherwise its
# classifier decides. On held-out canvases 0.1 labels 82 % of the slots that box an object right and 75 % of
# the others none (0.3: 76 % and 84 %; 0: 83 % and 58 %).
LABEL_GATE = 0.1
# A class the classifier gives less than this probability is written `none:` too: the LM copies the slots'
# labels, so a doubtful one becomes an answer about an absent class (held out: slots carrying an absent class
# 10 -> 5 of 198 pairs, objects boxed with the right label 159 -> 152 of 185).
LABEL_FLOOR = 0.6
# The second look sees a square around the box, its longer side grown by this share, at least LOOK_MIN_SIDE of
# the image. Held out on textured canvases (labels on the same chosen boxes): 1.3 labels 160 of 239 objects
# right, 1.6 152, the pooled patches 125.
LOOK_MARGIN = 1.3
LOOK_MIN_SIDE = 0.1
# A look's features: [CLS, mean patch], then its patches pooled over a LOOK_GRID x LOOK_GRID grid of the window,
# which the look refine head reads. Held out on textured canvases: objects boxed at IoU >= 0.75 48 -> 131 of 239
# ([CLS, mean patch] alone: 78).
LOOK_GRID = 4


def region_text_ids(tokenizer) -> list[int]:
    """The token ids slots write boxes with: digits 0-9, the opening bracket (as answers write it, after a
    space), comma, closing bracket, padding (a space). Raises when a digit is not one token."""
    def single(*candidates: str) -> int:
        for candidate in candidates:
            ids = tokenizer(candidate, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                return ids[0]
        raise ValueError(f"region slots need {candidates[0]!r} as one token of the LM's tokenizer")

    return [single(str(digit)) for digit in range(10)] + [single(" [", "["), single(","), single("]"),
                                                         single(" ", "\n")]


def region_label_ids(tokenizer, classes: list[str]) -> list[list[int]]:
    """Token ids of `none:` then of each `<class>:`, as a detection answer line starts."""
    return [tokenizer(f"{name}:", add_special_tokens=False)["input_ids"] for name in ["none", *classes]]


def box_text_codes(grid_boxes: torch.Tensor, digits: int) -> torch.Tensor:
    """(..., 4) integer boxes -> (..., 5 + 4 * digits) text piece codes of "[x1,y1,x2,y2]" then padding."""
    shape, device = grid_boxes.shape[:-1], grid_boxes.device
    powers = 10 ** torch.arange(digits - 1, -1, -1, device=device)  # most significant first
    values = grid_boxes.long().unsqueeze(-1)  # (..., 4, 1)
    digit_values = (values // powers) % 10  # (..., 4, digits), leading zeros included
    written = (values >= powers) | (powers == 1)  # no leading zeros; a lone 0 is written
    codes, kept = [], []
    for coordinate in range(4):
        codes += [torch.full(shape + (1,), OPEN if coordinate == 0 else COMMA, device=device),
                  digit_values[..., coordinate, :]]
        kept += [torch.ones(shape + (1,), dtype=torch.bool, device=device), written[..., coordinate, :]]
    codes.append(torch.full(shape + (1,), CLOSE, device=device))
    kept.append(torch.ones(shape + (1,), dtype=torch.bool, device=device))
    codes, kept = torch.cat(codes, -1), torch.cat(kept, -1)
    # The unwritten places move to the end, the written ones keep their order, and become padding.
    length = codes.shape[-1]
    order = torch.argsort((~kept).long() * length + torch.arange(length, device=device), dim=-1)
    return torch.where(torch.gather(kept, -1, order), torch.gather(codes, -1, order), PAD)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, n, 4) x (B, m, 4) xyxy -> (B, n, m) IoU."""
    low = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    high = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter).clamp(min=1e-9)


def pool_boxes(patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, side*side, C) patch features, (B, K, 4) boxes in 0..1 -> (B, K, C): each box's area-weighted mean."""
    batch, count, _ = patches.shape
    side = int(count ** 0.5)
    edges = torch.arange(side, device=patches.device, dtype=boxes.dtype)
    scaled = boxes * side

    def overlap(low, high):  # (B, K, side): how much of each patch row (column) the box covers
        return (torch.minimum(high.unsqueeze(-1), edges + 1) - torch.maximum(low.unsqueeze(-1), edges)).clamp(min=0)

    weights = overlap(scaled[..., 1], scaled[..., 3]).unsqueeze(-1) * overlap(scaled[..., 0], scaled[..., 2]).unsqueeze(-2)
    weights = weights.reshape(batch, boxes.shape[1], count)
    weights = weights / weights.sum(-1, keepdim=True).clamp(min=1e-6)
    return weights.to(patches.dtype) @ patches


def look_windows(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes in 0..1 -> the square windows the second look crops: centred on each box, its longer side
    grown by LOOK_MARGIN (the window may reach past the image's edge)."""
    centre = (boxes[..., :2] + boxes[..., 2:]) / 2
    side = ((boxes[..., 2:] - boxes[..., :2]).amax(-1, keepdim=True) * LOOK_MARGIN).clamp(min=LOOK_MIN_SIDE)
    return torch.cat([centre - side / 2, centre + side / 2], -1)


def look_sides(boxes: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes -> (..., 1) the side of each box's look window: the unit of the look refine head's moves."""
    windows = look_windows(boxes)
    return windows[..., 2:3] - windows[..., 0:1]


def moved_corners(boxes: torch.Tensor, moves: torch.Tensor) -> torch.Tensor:
    """(..., 4) boxes moved corner by corner, the corners put back in order and kept inside the image."""
    moved = boxes + moves
    low, high = torch.minimum(moved[..., :2], moved[..., 2:]), torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.cat([low, high], -1).clamp(0, 1)


def _sampling_weights(low: torch.Tensor, high: torch.Tensor, source: int, size: int) -> torch.Tensor:
    """(B, K) window edges in 0..1 -> (B, K, size, source) bilinear weights of `size` samples evenly spread over
    each window along an axis of `source` pixels; samples past the edge get no weight (zero pixels)."""
    steps = (torch.arange(size, device=low.device, dtype=low.dtype) + 0.5) / size
    where = (low.unsqueeze(-1) + steps * (high - low).unsqueeze(-1)) * source - 0.5  # in pixel centres
    pixels = torch.arange(source, device=low.device, dtype=low.dtype)
    return (1 - (where.unsqueeze(-1) - pixels).abs()).clamp(min=0)


def crop_windows(pixels: torch.Tensor, windows: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) images, (B, K, 4) windows in 0..1 -> (B, K, C, size, size) crops, bilinear. Two matrix
    products per crop (rows, then columns): fixed shapes that trace into ONNX as they are."""
    height, width = pixels.shape[-2:]
    windows = windows.to(pixels.dtype)
    rows = _sampling_weights(windows[..., 1], windows[..., 3], height, size)  # (B, K, size, H)
    columns = _sampling_weights(windows[..., 0], windows[..., 2], width, size)  # (B, K, size, W)
    return rows.unsqueeze(2) @ pixels.unsqueeze(1) @ columns.unsqueeze(2).transpose(-1, -2)


def look_grid_boxes(device=None) -> torch.Tensor:
    """(LOOK_GRID^2, 4) the cells of a LOOK_GRID x LOOK_GRID grid over the unit square, row-major."""
    steps = torch.arange(LOOK_GRID, device=device, dtype=torch.float32) / LOOK_GRID
    top, left = steps.repeat_interleave(LOOK_GRID), steps.repeat(LOOK_GRID)
    return torch.stack([left, top, left + 1 / LOOK_GRID, top + 1 / LOOK_GRID], -1)


def refine_features(patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, K, 6C + 4) what a chosen box's correction is read from: the patch features pooled over the box, over
    its four quarters and over the box grown by a quarter of its size each way, then its corners (x10)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    middle_x, middle_y, width, height = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
    regions = [(x1, y1, x2, y2), (x1, y1, middle_x, middle_y), (middle_x, y1, x2, middle_y),
               (x1, middle_y, middle_x, y2), (middle_x, middle_y, x2, y2),
               (x1 - width / 4, y1 - height / 4, x2 + width / 4, y2 + height / 4)]
    pooled = [pool_boxes(patches, torch.stack(region, -1).clamp(0, 1)) for region in regions]
    return torch.cat(pooled + [boxes.to(patches.dtype) * 10], -1)


class RegionSlots(nn.Module):
    """The box head, the region token map, the label classifier and the slot text (see the module docstring)."""

    def __init__(self, config, vision_width: int, width_out: int):
        super().__init__()
        self.slots, self.grid = config.region_slots, config.region_grid
        # On patches rather than the LM's pixel-shuffled cells: held out, a slot boxes 171 of 185 test objects
        # (IoU >= 0.5) against 152 from the 4 x 4 cells, where two objects often share a cell.
        self.side = config.token_grid_side * config.pixel_shuffle
        self.box_head = FeatureMap("linear", 2 * vision_width, 5)  # objectness logit; x1, y1, x2, y2 in patches
        # The chosen boxes' corrections (x1, y1, x2, y2 in box sizes): zero until the region start fits them.
        self.refine_head = FeatureMap("linear", 6 * vision_width + 4, 4)
        nn.init.zeros_(self.refine_head.out.weight)
        nn.init.zeros_(self.refine_head.out.bias)
        self.looks = config.region_looks
        self.read_width = 2 * vision_width if self.looks else vision_width  # a look's [CLS, mean patch], or pooled
        # With looks, the chosen boxes' last corrections (in window sides): zero until the region start fits them.
        self.look_refine_head = FeatureMap("linear", (2 + LOOK_GRID ** 2) * vision_width, 4) if self.looks else None
        if self.looks:
            nn.init.zeros_(self.look_refine_head.out.weight)
            nn.init.zeros_(self.look_refine_head.out.bias)
        self.region_map = FeatureMap("linear", self.read_width, width_out)
        labels = config.region_labels or [[]]
        self.label_head = FeatureMap("linear", self.read_width, len(labels))
        # The tokens slots write, as one small vocabulary: the text pieces, then each label's tokens.
        self.vocabulary = list(config.region_text_ids or [0] * PIECES) + [t for ids in labels for t in ids]
        width = max(len(ids) for ids in labels)
        self.slot_length = 1 + width + 5 + 4 * len(str(self.grid))  # tokens a slot adds after the image
        self.hidden = False  # True: the image's tokens end before the slots (the model as it was before them)
        starts = [PIECES + sum(len(ids) for ids in labels[:index]) for index in range(len(labels))]
        self.label_codes = [[start + i for i in range(len(ids))] + [PAD] * (width - len(ids))
                            for start, ids in zip(starts, labels)]

    def box_features(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, C) patch features -> (B, N, 2C): each patch's, then its 3 x 3 neighbourhood's mean (context
        for the object's extent)."""
        batch, count, width = patches.shape
        grid = patches.transpose(1, 2).reshape(batch, width, self.side, self.side)
        around = nn.functional.avg_pool2d(grid, 3, stride=1, padding=1, count_include_pad=False)
        return torch.cat([patches, around.reshape(batch, width, count).transpose(1, 2)], -1)

    def patch_boxes(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(objectness logits (B, N), boxes (B, N, 4) in 0..1) of each patch."""
        raw = self.box_head(self.box_features(patches)).float()
        index = torch.arange(self.side * self.side, device=patches.device)
        centres = torch.stack([index % self.side + 0.5, index // self.side + 0.5], -1) / self.side  # (N, 2): x, y
        boxes = centres.repeat(1, 2) + raw[..., 1:] / self.side
        x1, x2 = torch.minimum(boxes[..., 0], boxes[..., 2]), torch.maximum(boxes[..., 0], boxes[..., 2])
        y1, y2 = torch.minimum(boxes[..., 1], boxes[..., 3]), torch.maximum(boxes[..., 1], boxes[..., 3])
        return raw[..., 0], torch.stack([x1, y1, x2, y2], -1).clamp(0, 1)

    def chosen(self, patches: torch.Tensor, overlap: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
        """((B, K, 4) boxes in 0..1, (B, K) gates in 0..1) of K patches, in the order answers list boxes:
        greedily the most object-like patch whose box overlaps no box chosen before by more than `overlap` IoU
        (neighbouring patches often box the same object); when fewer remain, the most object-like of the others.
        A slot's gate is its objectness probability, 0 for a box that repeats one chosen before."""
        objectness, boxes = self.patch_boxes(patches)
        scores, picks, gates = objectness, [], []
        for _ in range(self.slots):  # K fixed steps: they trace into ONNX as they are
            pick = scores.argmax(-1)  # (B,)
            picks.append(pick)
            gates.append(torch.sigmoid(torch.gather(scores, 1, pick[:, None])[:, 0]))
            picked = torch.gather(boxes, 1, pick[:, None, None].expand(-1, 1, 4))  # (B, 1, 4)
            repeated = box_iou(picked, boxes)[:, 0] > overlap  # (B, N)
            scores = torch.where(repeated, scores - 1e4, scores)  # below every other cell, still in order
            scores = scores.scatter(1, pick[:, None], float("-inf"))
        # Slots in the order answers list boxes: top to bottom, then left to right, on the grid.
        picked = self.refined(patches, torch.gather(boxes, 1, torch.stack(picks, 1).unsqueeze(-1).expand(-1, -1, 4)))
        corner = torch.round(picked[..., :2] * self.grid)
        rank = torch.arange(self.slots, device=picked.device)  # ties keep the pick order (keys are unique)
        order = ((corner[..., 1] * (self.grid + 1) + corner[..., 0]) * self.slots + rank).argsort(dim=-1)
        return torch.gather(picked, 1, order.unsqueeze(-1).expand(-1, -1, 4)), torch.gather(torch.stack(gates, 1), 1, order)

    def refined(self, patches: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The chosen boxes moved by the refine head: each corner by its predicted share of the box's size.
        Held out, slots box 101 of 185 test objects at IoU >= 0.75 with it, 51 without."""
        features = refine_features(patches, boxes).to(self.refine_head.norm.weight.dtype)
        sizes = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1e-3).repeat(1, 1, 2)
        return moved_corners(boxes, self.refine_head(features).float() * sizes)

    def look_refined(self, boxes: torch.Tensor, looks: torch.Tensor | None) -> torch.Tensor:
        """The chosen boxes moved by the look refine head, each corner by its predicted share of its look's
        window side; unchanged without looks."""
        if not self.looks:
            return boxes
        moves = self.look_refine_head(looks.to(self.look_refine_head.norm.weight.dtype)).float()
        return moved_corners(boxes, moves * look_sides(boxes))

    def labels(self, pooled: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """(B, K) each slot's label: 0 (`none`) below the gate or the floor, else 1 + its class."""
        confidence, best = torch.softmax(self.label_head(pooled).float(), -1).max(-1)
        return torch.where((gates >= LABEL_GATE) & (confidence >= LABEL_FLOOR), best, 0)

    def read_features(self, patches: torch.Tensor, boxes: torch.Tensor, looks: torch.Tensor | None) -> torch.Tensor:
        """(B, K, width) what the label and the region token read of each chosen box: its second look, or the
        patch features pooled over it."""
        if not self.looks:
            return pool_boxes(patches, boxes)
        if looks is None:
            raise ValueError("these region slots read each box with a second look: pass the pixels (or the looks "
                             "`look_features` computes) along with the patch features")
        return looks[..., :self.read_width]

    def forward(self, patches: torch.Tensor, embeddings: nn.Embedding,
                looks: torch.Tensor | None = None) -> torch.Tensor:
        """(B, K * (1 + text length), LM width): each slot's region token, then its label and box text. `looks`:
        the chosen boxes' second looks, (B, K, (2 + LOOK_GRID^2) x encoder width), when the slots take them."""
        with torch.no_grad():  # the heads are probes fitted on the training boxes; the LM's loss does not move them
            boxes, gates = self.chosen(patches)
            read = self.read_features(patches, boxes, looks)
            label = self.labels(read, gates)
            boxes = self.look_refined(boxes, looks)
            label_codes = torch.tensor(self.label_codes, dtype=torch.long, device=patches.device)[label]
            codes = torch.cat([label_codes, box_text_codes(torch.round(boxes * self.grid), len(str(self.grid)))], -1)
        tokens = self.region_map(read) * gates.unsqueeze(-1).to(patches.dtype)  # (B, K, width)
        # Embed the small vocabulary, then index it: an ONNX export folds the first step into a constant.
        table = embeddings(torch.tensor(self.vocabulary, dtype=torch.long, device=patches.device))
        slots = torch.cat([tokens.unsqueeze(2).to(table.dtype), table[codes]], dim=2)
        return slots.reshape(slots.shape[0], -1, slots.shape[-1])


@contextmanager
def slots_hidden(model, processor):
    """The model and its processor as they were before they had region slots: nothing follows the image's
    patch tokens. Self-replay generates the model's earlier answers this way."""
    modules = [module for module in model.modules() if isinstance(module, RegionSlots)]
    if not modules:
        yield
        return
    length = processor.image_seq_len
    processor.image_seq_len = length - modules[0].slots * modules[0].slot_length
    for module in modules:
        module.hidden = True
    try:
        yield
    finally:
        processor.image_seq_len = length
        for module in modules:
            module.hidden = False


def slot_overrides(model_path: str, processor, classes: list[str], grid: int, slots: int, looks: bool = True) -> dict:
    """The config changes that give a composed VLM `slots` region slots labelled with `classes` on the 0..grid
    grid (reading each box with a second look when `looks`), and the processor's image token count set to match.
    The region start fits the slots' heads."""
    from .configuration import ComposedVLMConfig

    overrides = {"region_slots": int(slots), "region_grid": int(grid), "region_looks": bool(looks),
                 "region_text_ids": region_text_ids(processor.tokenizer),
                 "region_labels": region_label_ids(processor.tokenizer, classes)}
    processor.image_seq_len = ComposedVLMConfig.from_pretrained(str(model_path), **overrides).image_seq_len
    return overrides
