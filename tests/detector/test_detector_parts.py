"""Dedicated detector parts: the one-to-one matcher, box operations and the simple feature pyramid."""

from __future__ import annotations

import itertools

import pytest
import torch

from visiontune.detector.box_ops import cxcywh_to_xyxy, pairwise_generalized_iou, pairwise_iou, xyxy_to_cxcywh
from visiontune.detector.matcher import hungarian_match, matching_cost
from visiontune.detector.pyramid import SimpleFeaturePyramid


def _random_boxes(generator, count):
    centre = torch.rand(count, 2, generator=generator) * 0.6 + 0.2
    size = torch.rand(count, 2, generator=generator) * 0.3 + 0.05
    return torch.cat([centre, size], dim=1)


@pytest.mark.parametrize("seed", range(20))
def test_hungarian_equals_brute_force_assignment(seed):
    generator = torch.Generator().manual_seed(seed)
    queries, objects, classes = 6, 1 + seed % 4, 3
    logits = torch.randn(1, queries, classes, generator=generator)
    boxes = _random_boxes(generator, queries)[None]
    target = {"labels": torch.randint(0, classes, (objects,), generator=generator),
              "boxes": _random_boxes(generator, objects)}
    (rows, columns), = hungarian_match(logits, boxes, [target])
    cost = matching_cost(logits[0], boxes[0], target["labels"], target["boxes"])
    found = float(cost[rows, columns].sum())
    best = min(float(sum(cost[q, t] for t, q in enumerate(chosen)))
               for chosen in itertools.permutations(range(queries), objects))
    assert found == pytest.approx(best, abs=1e-5)
    assert sorted(columns.tolist()) == list(range(objects)) and len(set(rows.tolist())) == objects


def test_matcher_edge_cases():
    logits, boxes = torch.zeros(2, 3, 2), torch.full((2, 3, 4), 0.5)
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}
    one = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    matches = hungarian_match(logits, boxes, [empty, one])
    assert len(matches[0][0]) == 0 and matches[1][1].tolist() == [0]
    too_many = {"labels": torch.zeros(4, dtype=torch.long), "boxes": torch.full((4, 4), 0.5)}
    with pytest.raises(ValueError, match="4 objects but the head makes only 3"):
        hungarian_match(logits, boxes, [too_many, one])


def test_iou_and_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    iou, _ = pairwise_iou(a, b)
    assert iou[0].tolist() == pytest.approx([1 / 7, 0.0, 1.0])
    giou = pairwise_generalized_iou(a, b)[0]
    # Enclosing boxes: 3x3 = 9 (union 7) and 5x2 = 10 (union 5).
    assert giou.tolist() == pytest.approx([1 / 7 - 2 / 9, -0.5, 1.0])
    boxes = torch.rand(5, 4)
    assert torch.allclose(xyxy_to_cxcywh(cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)


@pytest.mark.parametrize("patch,height,width", [(16, 224, 224), (14, 224, 224), (14, 238, 322), (16, 200, 328)])
def test_pyramid_levels_have_the_stride_sizes(patch, height, width):
    pyramid = SimpleFeaturePyramid(in_channels=24, out_channels=16, patch_size=patch, strides=(4, 8, 16, 32))
    grid = (height // patch, width // patch)
    levels = pyramid(torch.randn(2, 24, *grid), (height, width))
    expected = [(-(-height // s), -(-width // s)) for s in (4, 8, 16, 32)]
    assert [tuple(level.shape) for level in levels] == [(2, 16, h, w) for h, w in expected]
    levels[0].sum().backward()  # every level is differentiable back to the ViT map


def test_local_peaks_by_hand():
    from visiontune.detector.config import check_peak_window
    from visiontune.detector.peaks import keep_local_peaks, local_peaks

    # two levels: 2x4 then 1x2 positions; class 0 has two adjacent scores on level 0 (only the higher is a
    # peak) and one in the far corner; class 1 is high where class 0's neighbour is, so classes never suppress
    # each other; level 1 is its own map, so its 9 does not suppress level 0's scores
    level0 = torch.tensor([[[5.0, 4.0, -9.0, -9.0], [-9.0, -9.0, -9.0, 3.0]],  # class 0
                           [[-9.0, 8.0, -9.0, -9.0], [-9.0, -9.0, -9.0, -9.0]]])  # class 1
    level1 = torch.tensor([[[9.0, 1.0]], [[-9.0, -9.0]]])
    logits = torch.cat([level0.flatten(1), level1.flatten(1)], 1).T[None]  # (1, 10 positions, 2 classes)
    sizes = [(2, 4), (1, 2)]
    peaks = local_peaks(logits, sizes, 3)
    assert peaks[0, :, 0].tolist() == [True, False, False, False, False, False, False, True, True, False]
    # class 1: the 8, and the flat -9s away from it, which tie among themselves (sigmoid ~0: never chosen)
    assert peaks[0, 1, 1] and not peaks[0, 0, 1] and peaks[0, 3, 1] and peaks[0, 8, 1] and peaks[0, 9, 1]

    # across levels (strides 8 and 16): level 1's 9 covers columns 0-1 of level 0, so the 5 there stands down;
    # its 1 is below the 3 in level 0's far corner, which stays; level 0's 5 does not beat level 1's 9
    across = local_peaks(logits, sizes, 3, strides=(8, 16))
    assert across[0, :, 0].tolist() == [False] * 7 + [True, True, False]

    outputs = {"logits": logits, "level_sizes": sizes}
    kept = keep_local_peaks(outputs, 3)
    assert kept[0, 1, 0] < -1e30 and torch.equal(kept[peaks], logits[peaks])
    assert torch.equal(keep_local_peaks(outputs, 0), logits)
    with pytest.raises(ValueError, match="odd number"):
        check_peak_window(2)
    from visiontune.detector.config import DetectorConfig

    with pytest.raises(ValueError, match="multiple of the one before"):
        DetectorConfig(classes=["a"], strides=(8, 12))
    DetectorConfig(classes=["a"], strides=(8, 12), peak_across_levels=False)  # within levels: any strides
    with pytest.raises(ValueError, match="hold 8 positions"):
        local_peaks(logits, [(2, 4)], 3)


def test_config_files_with_unknown_fields_are_refused(tmp_path):
    import json

    from visiontune.detector.config import DetectorConfig

    DetectorConfig(classes=["a"]).save(tmp_path)
    values = json.loads((tmp_path / "detector.json").read_text())
    assert DetectorConfig.load(tmp_path).classes == ["a"]
    (tmp_path / "detector.json").write_text(json.dumps({**values, "relation_layers": 2}))
    with pytest.raises(ValueError, match="unknown fields.*relation_layers"):
        DetectorConfig.load(tmp_path)
