"""Detection records -> training batches: (B, 3, H, W) pixels in 0..1 and per-image targets with labels and
normalised cxcywh boxes. Crowd regions are not trained on (COCO evaluation ignores them as well)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.records import Record
from .augment import AugmentSettings, augment
from .image_io import image_to_input


class DetectionDataset(Dataset):
    def __init__(self, records: list[Record], classes: list[str], image_size: tuple[int, int],
                 augmentation: AugmentSettings | None = None, seed: int = 0):
        self.records, self.index = records, {name: i for i, name in enumerate(classes)}
        self.image_size, self.augmentation, self.seed = image_size, augmentation, seed
        self.epoch = 0  # set before each epoch; workers are re-created per epoch, so they see it

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        record = self.records[index]
        image = record.load_image()
        kept = [box for box in record.boxes if not box.crowd]
        boxes = np.array([box.xyxy for box in kept], dtype=np.float32).reshape(-1, 4)
        labels = np.array([self.index[box.label] for box in kept], dtype=np.int64)
        if self.augmentation is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image, boxes, labels = augment(image, boxes, labels, self.augmentation, rng)
        width, height = image.size
        normalised = boxes / np.array([width, height, width, height], dtype=np.float32)
        cxcywh = np.stack([(normalised[:, 0] + normalised[:, 2]) / 2, (normalised[:, 1] + normalised[:, 3]) / 2,
                           normalised[:, 2] - normalised[:, 0], normalised[:, 3] - normalised[:, 1]], 1)
        keep = (cxcywh[:, 2] > 0) & (cxcywh[:, 3] > 0)
        pixels = torch.from_numpy(image_to_input(image, self.image_size))
        return pixels, {"labels": torch.from_numpy(labels[keep]), "boxes": torch.from_numpy(cxcywh[keep])}


def collate(batch):
    return torch.stack([pixels for pixels, _ in batch]), [target for _, target in batch]
