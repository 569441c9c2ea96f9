"""Region slots: a composed VLM fine-tuned for detection writes, after each image, what its regions hold as
lines of a detection answer (`<class>: [x1,y1,x2,y2]`), which the LM answers from."""

from __future__ import annotations

import json

import pytest
import torch

from visiontune.models.compose.regions import (PAD, RegionSlots, box_text_codes, crop_windows, look_windows, pool_boxes,
                                               region_text_ids)

QUIET = dict(log=lambda *_: None)


def _decode(tokenizer, codes) -> str:
    ids = region_text_ids(tokenizer)
    return tokenizer.decode([ids[c] for c in codes])


def test_box_text_is_the_answer_format_without_leading_zeros_then_padding(tiny_models):
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(tiny_models["smolvlm"]).tokenizer
    codes = box_text_codes(torch.tensor([[12, 40, 100, 0], [5, 7, 9, 61]]), digits=3)
    assert codes.shape == (2, 17)
    assert _decode(tokenizer, codes[0]).rstrip() == "[12,40,100,0]"
    assert _decode(tokenizer, codes[1]).rstrip() == "[5,7,9,61]"
    assert (codes[1, 10:] == PAD).all() and (codes[0, 13:] == PAD).all()


class _Config:
    region_slots, region_grid, token_grid_side, pixel_shuffle, region_text_ids, region_labels = 3, 100, 1, 2, None, None
    region_looks = False


def test_slots_take_one_patch_per_object_in_reading_order():
    """Greedy: a patch whose box repeats a chosen one (IoU > 0.5) is taken only when nothing else is left, and
    its gate is 0, so its region token is silent and its label `none`."""
    slots = RegionSlots(_Config, vision_width=4, width_out=6)
    boxes = torch.tensor([[[0, 0, .5, .5], [0, 0, .5, .45], [.5, .5, 1, 1], [.6, .6, 1, 1]]])
    slots.patch_boxes = lambda patches: (torch.tensor([[5.0, 4.0, 3.0, 2.0]]), boxes)
    chosen, gates = slots.chosen(torch.zeros(1, 4, 4))  # the refine head moves nothing until it is fitted
    assert chosen[0].tolist() == boxes[0, :3].tolist()  # patches 0, 1 (the repeat, taken last), 2; reading order
    assert gates[0, 1] == 0 and gates[0, 0] > 0.99 and gates[0, 2] > 0.9


def test_box_features_add_each_patchs_neighbourhood_mean():
    slots = RegionSlots(_Config, vision_width=1, width_out=6)  # a 2 x 2 patch grid
    features = slots.box_features(torch.tensor([[[1.0], [2.0], [3.0], [6.0]]]))[0]
    assert features[:, 0].tolist() == [1, 2, 3, 6]
    assert features[:, 1].tolist() == [3, 3, 3, 3]  # every patch's 3 x 3 neighbourhood is the whole grid


def test_pooling_is_the_area_weighted_mean_of_the_patches_under_a_box():
    patches = torch.arange(64 * 2, dtype=torch.float32).reshape(1, 64, 2)
    boxes = torch.tensor([[[0, 0, 1 / 8, 1 / 8], [0, 0, 1, 1], [0.5, 0.5, 0.5 + 1 / 16, 0.5 + 1 / 8]]])
    pooled = pool_boxes(patches, boxes)[0]
    assert pooled[0].tolist() == [0.0, 1.0] and pooled[1].tolist() == patches[0].mean(0).tolist()
    assert pooled[2].tolist() == patches[0, 4 * 8 + 4].tolist()  # half of one patch: that patch


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    """A tiny composed VLM (4 x 4 image cells) detection-trained a few steps on canvases of large shapes that
    have their own colour. Its vision tower is random, so its slots find fewer objects than real features do."""
    from visiontune.api.train import train
    from visiontune.data.builtin.shapes import write_shape_detection
    from visiontune.models.tiny import build_tiny_composed

    root = tmp_path_factory.mktemp("regions")
    model = build_tiny_composed(root / "model", image_size=64)
    data = write_shape_detection(root / "canvases", count=60, seed=2, size=64, objects=(1, 2), extent=(0.25, 0.45),
                                 colour_by_class=True)
    summary = train(task="detect", model=str(model), data=str(data), output=str(root / "run"), max_steps=2,
                    batch_size=4, box_grid=100, keep_skills=False, num_workers=0, report_to="none", **QUIET)
    off = train(task="detect", model=str(model), data=str(data), output=str(root / "off"), max_steps=1,
                batch_size=4, region_slots=0, keep_skills=False, num_workers=0, report_to="none", **QUIET)
    return root, data, summary, off


def test_detection_fine_tuning_gives_a_composed_vlm_fitted_region_slots(region_run):
    root, _, summary, off = region_run
    fitted = summary["region_start"]
    assert fitted["objects"] > 60 and fitted["boxed"] >= 0.25 * fitted["objects"], fitted  # random boxes: ~0.05
    metadata = json.loads((root / "run" / "visiontune.json").read_text())
    assert metadata["model_config"]["region_slots"] == 2 and metadata["model_config"]["region_grid"] == 100
    assert metadata["model_config"]["region_looks"] and metadata["second_look"]
    assert off["region_start"] is None
    answered = summary["slot_answers"]  # the training answers are what the fitted slots show
    assert answered["boxes_true"] > 60 and 0 < answered["boxes_answered"] < answered["boxes_true"], answered
    assert off["slot_answers"] is None
    assert json.loads((root / "off" / "visiontune.json").read_text())["model_config"] is None


def test_a_run_loads_with_its_slots_and_they_read_as_answer_lines(region_run, tmp_path, monkeypatch):
    """From another folder, the run's base gets its slots again; the slot text, read back through the nearest
    token embeddings, is `<label>: [x1,y1,x2,y2]` lines, and many name and box a real object."""
    from visiontune.data.loading import DataSpec, load_box_records
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks.detect.box_text import from_grid, parse_boxes

    root, data, _, _ = region_run
    monkeypatch.chdir(tmp_path)
    # A random tower's objectness stays near the base rate (an object's centre in 2 % of the patches), below the
    # gate real features clear; the labels are what is read here.
    monkeypatch.setattr("visiontune.models.compose.regions.LABEL_GATE", 0.02)
    model, processor, _ = load_for_inference(str(root / "run"), **QUIET)
    records, classes, _ = load_box_records(DataSpec(str(data)), **QUIET)
    config = model.config
    before = config.token_grid_side ** 2 + int(config.summary_token)  # the summary and patch tokens come first
    with torch.no_grad():
        features = model.get_image_features(
            processor.image_processor([r.load_image() for r in records[:12]], return_tensors="pt")["pixel_values"])
    assert features.shape[1] == config.image_seq_len == processor.image_seq_len > before
    table = model.get_input_embeddings().weight
    readings = json.loads((root / "run" / "slot-readings.json").read_text())  # what training answered from
    right = total = 0
    for record, image in zip(records, features):
        for slot, reading in zip(image[before:].reshape(config.region_slots, -1, image.shape[-1]),
                                 readings[record.image_key()]):
            ids = torch.cdist(slot[1:], table).argmin(-1)  # the text part: embeddings of tokens
            text = processor.tokenizer.decode(ids).strip()
            parsed = parse_boxes(text, ["none", *classes], 100)
            assert len(parsed.boxes) == 1, text
            label, box = parsed.boxes[0]
            assert tuple(box) == tuple(reading[2]), (text, reading)
            if label == "none":
                continue
            total += 1
            pixels = from_grid(box, record.width, record.height, 100)
            right += any(b.label == label and _iou(b.xyxy, pixels) >= 0.5 for b in record.boxes)
    assert total >= 6 and right >= 0.25 * total, (right, total)


def test_slots_hide_for_the_models_own_earlier_answers(region_run, tmp_path, monkeypatch):
    """Self-replay asks the model as it was before it had slots: inside `slots_hidden` nothing follows the patch
    tokens, for the model and its processor alike, so generation runs; afterwards the slots are back."""
    from visiontune.inference.predictor import Predictor
    from visiontune.models.compose.regions import slots_hidden
    from visiontune.models.vlm import load_for_inference
    from visiontune.tasks.base import user_turn
    from visiontune.tasks.caption.task import CaptionTask

    root, data, _, _ = region_run
    monkeypatch.chdir(tmp_path)
    model, processor, _ = load_for_inference(str(root / "run"), **QUIET)
    config = model.config
    before = config.token_grid_side ** 2 + int(config.summary_token)
    pixels = processor.image_processor([_first_image(data)], return_tensors="pt")["pixel_values"]
    with torch.no_grad(), slots_hidden(model, processor):
        assert model.get_image_features(pixels).shape[1] == processor.image_seq_len == before
        replies = Predictor(model, processor, CaptionTask(), max_new_tokens=4).generate(
            [_first_image(data)], [[user_turn("Describe this image.")]])["texts"]
    assert len(replies) == 1
    with torch.no_grad():
        assert model.get_image_features(pixels).shape[1] == processor.image_seq_len == config.image_seq_len > before


def _first_image(data):
    from visiontune.data.loading import DataSpec, load_box_records

    return load_box_records(DataSpec(str(data)), **QUIET)[0][0].load_image().convert("RGB")


def _iou(a, b) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_an_onnx_export_writes_the_same_slots_without_the_embedding_table(region_run, tmp_path):
    import onnx

    from visiontune.api.predict import load_predictor
    from visiontune.export.onnx_export import export_onnx

    root, data, _, _ = region_run
    export_onnx(str(root / "run"), str(tmp_path / "export"), **QUIET)
    graph = onnx.load(str(tmp_path / "export" / "onnx" / "vision_encoder.onnx")).graph
    model, _, _ = __import__("visiontune.models.vlm", fromlist=["x"]).load_for_inference(str(root / "run"), **QUIET)
    vocabulary = tuple(model.get_input_embeddings().weight.shape)
    assert all(tuple(tensor.dims) != vocabulary for tensor in graph.initializer)  # folded into the slots' few rows
    images = sorted((data.parent / "images").glob("*.png"))[:3]
    kwargs = dict(task="detect", batch_size=2, max_new_tokens=24, **QUIET)
    rows = [load_predictor(str(path), **kwargs).predict([str(i) for i in images], progress=False)
            for path in (root / "run", tmp_path / "export" / "onnx")]
    assert [r["replies"] for r in rows[0]] == [r["replies"] for r in rows[1]]


def test_the_refine_head_learns_to_move_chosen_boxes_onto_their_objects():
    """Fitted on slots whose boxes miss their objects by an offset the patch features carry, the refine head
    moves the chosen boxes onto them; unfitted, it moves nothing."""
    from visiontune.metrics.detection import pairwise_iou
    from visiontune.training.region_start import _fit_refine_head

    images = 2000
    shifts = (torch.rand(images, 2, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.3
    patches = shifts[:, None, :].repeat(1, 4, 1)  # every patch of an image knows its object's offset
    box = torch.tensor([.2, .2, .6, .6])
    slots = RegionSlots(_Config, vision_width=2, width_out=6)
    slots.patch_boxes = lambda patches: (torch.tensor([[5.0, 4.0, 3.0, 2.0]]).expand(len(patches), 4),
                                         box.expand(len(patches), 4, 4))
    truth = box + shifts.repeat(1, 2)
    objects = [[(0, tuple(truth[image].tolist()))] for image in range(images)]

    def mean_iou() -> float:
        with torch.no_grad():
            chosen = slots.chosen(patches)[0][:, 0].numpy()
        return float(sum(pairwise_iou(chosen[i:i + 1], truth[i:i + 1].numpy())[0, 0] for i in range(images)) / images)

    before = mean_iou()
    assert _fit_refine_head(slots, patches, objects) > images * 2  # slots overlapping their object (IoU >= 0.3)
    after = mean_iou()
    assert before < 0.75 and after > before + 0.15, (before, after)


def test_a_second_look_crops_a_square_around_each_box_at_the_encoders_input_size():
    from visiontune.models.compose import regions

    image = torch.randn(2, 3, 8, 8)
    whole = crop_windows(image, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]] * 2), 8)
    assert torch.allclose(whole[:, 0], image, atol=1e-6)  # the whole image at its own size is itself
    halved = crop_windows(image, torch.tensor([[[0.0, 0.0, 1.0, 1.0]]] * 2), 4)
    assert torch.allclose(halved[:, 0], torch.nn.functional.avg_pool2d(image, 2), atol=1e-6)
    corner = crop_windows(image, torch.tensor([[[0.0, 0.0, 0.5, 0.5], [1.0, 1.0, 1.5, 1.5]]] * 2), 4)
    assert torch.allclose(corner[:, 0], image[..., :4, :4], atol=1e-6) and (corner[:, 1] == 0).all()  # past the edge
    window = look_windows(torch.tensor([[0.2, 0.4, 0.4, 0.5]]))[0]  # 0.2 wide, 0.1 high: a square, grown
    assert torch.allclose(window, torch.tensor([0.3 - 0.13, 0.45 - 0.13, 0.3 + 0.13, 0.45 + 0.13]))
    assert regions.LOOK_MARGIN * 0.2 == pytest.approx(0.26)


def test_slot_labels_and_region_tokens_read_the_second_look_when_the_slots_take_one():
    class Looking(_Config):
        region_looks = True

    slots = RegionSlots(Looking, vision_width=2, width_out=6)
    assert slots.label_head.out.in_features == slots.region_map.out.in_features == 4  # a look's [CLS, mean patch]
    slots.label_head = torch.nn.Identity()  # what is read as the logits: none, class 1, class 2, (unused)
    patches, boxes = torch.zeros(1, 4, 2), torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]])
    looks = torch.tensor([[[0.0, 5.0, 0.0, -9.0], [0.0, 0.0, 5.0, -9.0]]])
    read = slots.read_features(patches, boxes, looks)
    assert slots.labels(read, torch.ones(1, 2)).tolist() == [[1, 2]]
    with pytest.raises(ValueError, match="second look"):
        slots.read_features(patches, boxes, None)
    plain = RegionSlots(_Config, vision_width=2, width_out=6)  # without looks: the patches pooled over the box
    assert torch.equal(plain.read_features(patches + 1, boxes, looks), torch.ones(1, 2, 2))


def test_cached_looks_are_taken_again_once_the_box_heads_change(region_run):
    """The looks crop the boxes the heads choose, so the feature cache keys them by those heads: looks taken
    before the region start fitted them are never reused."""
    from visiontune.data.loading import DataSpec, load_box_records
    from visiontune.models.feature_cache import FeatureCache
    from visiontune.models.vision_cache import IMAGE_KEYS, pixel_unit_keys
    from visiontune.models.vlm import load_for_inference

    root, data, _, _ = region_run
    model, processor, _ = load_for_inference(str(root / "run"), **QUIET)
    assert model.config.region_looks
    records, _, _ = load_box_records(DataSpec(str(data)), **QUIET)
    pixels = processor.image_processor([r.load_image() for r in records[:4]], return_tensors="pt")["pixel_values"]
    cache = FeatureCache.for_model(model, **QUIET)

    def cached() -> dict:
        return cache.apply(model, {"pixel_values": pixels, IMAGE_KEYS: pixel_unit_keys(pixels)})

    first = cached()
    with torch.no_grad():
        assert torch.allclose(first["vision_looks"], model.slot_looks(pixels, first["vision_patches"]))
        assert cached() and cache.computed == 4  # the same heads: reused
        model.projector.regions.box_head.out.bias[1:] += 0.5  # other boxes
        again = cached()
        assert cache.computed == 8 and not torch.allclose(again["vision_looks"], first["vision_looks"])
        assert torch.allclose(again["vision_looks"], model.slot_looks(pixels, again["vision_patches"]))


def test_the_look_refine_head_moves_each_box_by_what_its_look_sees():
    """Fitted on looks that carry how far each chosen box is off its object, the look refine head moves the
    boxes onto them (in window sides); unfitted, it moves nothing."""
    from visiontune.metrics.detection import pairwise_iou
    from visiontune.training.region_start import _fit_look_refine_head

    class Looking(_Config):
        region_looks = True

    images, generator = 2000, torch.Generator().manual_seed(0)
    slots = RegionSlots(Looking, vision_width=2, width_out=6)
    shifts = (torch.rand(images, 2, generator=generator) - 0.5) * 0.3
    looks = torch.randn(1, 1, slots.look_refine_head.norm.normalized_shape[0], generator=generator).repeat(images, 1, 1)
    looks[:, 0, :2] += shifts  # what each look sees: its object's offset
    chosen = torch.tensor([.2, .2, .6, .6]).repeat(images, 1, 1)
    truth = chosen[:, 0] + shifts.repeat(1, 2)
    objects = [[(0, tuple(truth[image].tolist()))] for image in range(images)]

    def mean_iou(boxes) -> float:
        return float(sum(pairwise_iou(boxes[i].numpy(), truth[i:i + 1].numpy())[0, 0] for i in range(images)) / images)

    assert torch.equal(slots.look_refined(chosen, looks), chosen)
    assert _fit_look_refine_head([slots], chosen, looks, objects) > images / 2  # overlapping their object
    with torch.no_grad():
        before, after = mean_iou(chosen), mean_iou(slots.look_refined(chosen, looks))
    assert before < 0.75 and after > before + 0.15, (before, after)


def test_a_slot_is_labelled_none_below_the_gate_or_when_its_class_is_doubtful():
    from visiontune.models.compose import regions

    slots = RegionSlots(_Config, vision_width=2, width_out=6)
    slots.label_head = torch.nn.Identity()  # the pooled features as the logits: none, class 1, class 2
    logits = torch.tensor([[[0.0, 5.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.5, 0.4], [5.0, 0.0, 0.0]]])
    gates = torch.tensor([[0.9, 0.05, 0.9, 0.9]])
    assert slots.labels(logits, gates).tolist() == [[1, 0, 0, 0]]  # sure; under the gate; doubtful (0.40); none
    assert regions.LABEL_FLOOR > 0.4


def test_a_resumed_run_answers_from_the_slots_its_first_start_fitted(region_run, tmp_path):
    """On --resume the fitted heads arrive with the checkpoint, after the answers are set, so the answers come
    from the readings the first start saved: the same counts, and a clear note when that file is gone."""
    import shutil

    from visiontune.api.train import SLOT_READINGS_FILE, train

    root, data, summary, _ = region_run
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    lines = []
    resumed = train(task="detect", model=str(root / "model"), data=str(data), output=str(run), resume=True,
                    max_steps=3, batch_size=4, box_grid=100, keep_skills=False, num_workers=0, report_to="none",
                    log=lines.append)
    assert resumed["slot_answers"] == summary["slot_answers"]
    (run / SLOT_READINGS_FILE).unlink()
    resumed = train(task="detect", model=str(root / "model"), data=str(data), output=str(run), resume=True,
                    max_steps=4, batch_size=4, box_grid=100, keep_skills=False, num_workers=0, report_to="none",
                    log=lines.append)
    assert resumed["slot_answers"] is None and any(SLOT_READINGS_FILE + " is missing" in line for line in lines)
