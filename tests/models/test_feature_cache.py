"""The frozen-vision feature cache: exact (same losses and gradients as recomputing), keyed so that nothing
stale is reused, and off (with the reason) where it would not be exact."""

from __future__ import annotations

import torch

from visiontune.api.train import train
from visiontune.data.loading import DataSpec, load_caption_records
from visiontune.models.feature_cache import FeatureCache
from visiontune.models.prompt_encoding import VLMCollator
from visiontune.models.tiny import build_tiny_model
from visiontune.models.vision_cache import IMAGE_KEYS, vision_fingerprint
from visiontune.models.vlm import TrainableSetup, load_processor, prepare_for_training
from visiontune.tasks import get_task
from visiontune.training.examples import ExampleDataset
from visiontune.training.vlm_trainer import answer_token_loss

QUIET = dict(log=lambda *_: None)


def _batch(model_path, shapes, image_size=None):
    processor = load_processor(model_path, image_size=image_size, **QUIET)
    records = load_caption_records(DataSpec(str(shapes["jsonl"])))
    dataset = ExampleDataset(records[:4], get_task("caption"))
    return VLMCollator(processor, image_keys=True)([dataset[i] for i in range(len(dataset))])


def _loss_and_grads(model, batch):
    model.zero_grad()
    torch.manual_seed(0)  # LoRA dropout draws the same masks
    loss, _ = answer_token_loss(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_cached_training_step_equals_the_uncached_one(tmp_path, shapes):
    model_path = build_tiny_model("composed", tmp_path / "model")
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)  # LoRA + projector
    model.train()
    batch = _batch(model_path, shapes)
    assert len(batch[IMAGE_KEYS]) == 4 and len(set(batch[IMAGE_KEYS])) == 4
    messages = []
    cache = FeatureCache.for_model(model, log=messages.append)
    assert cache is not None and not messages
    plain_loss, plain_grads = _loss_and_grads(model, {k: v for k, v in batch.items() if k != IMAGE_KEYS})
    for round_ in range(2):  # computed, then reused
        cached = cache.apply(model, dict(batch))
        assert "pixel_values" not in cached and cached["vision_patches"].shape[0] == 4
        loss, grads = _loss_and_grads(model, cached)
        assert torch.allclose(loss, plain_loss, atol=1e-6), (round_, loss, plain_loss)
        assert grads.keys() == plain_grads.keys() and any("projector" in n for n in grads)
        for name, grad in grads.items():
            assert torch.allclose(grad, plain_grads[name], atol=1e-6), name
    assert cache.computed == 4 and cache.hits == 4


def test_keys_change_with_the_pixels_and_the_encoder(tmp_path, shapes):
    model_path = build_tiny_model("composed", tmp_path / "model")
    other_size = build_tiny_model("composed", tmp_path / "other", seed=1)
    assert _batch(model_path, shapes)[IMAGE_KEYS] == _batch(model_path, shapes)[IMAGE_KEYS]
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    other = prepare_for_training(other_size, TrainableSetup(), torch.float32, **QUIET)
    assert vision_fingerprint(model) != vision_fingerprint(other)  # other weights: another cache folder
    pixels = _batch(model_path, shapes)["pixel_values"]
    from visiontune.models.vision_cache import pixel_unit_keys

    changed = pixels.clone()
    changed[0, 0, 0, 0] += 1e-3  # a changed image or preprocessing is another key
    assert pixel_unit_keys(changed)[0] != pixel_unit_keys(pixels)[0] and pixel_unit_keys(changed)[1:] == pixel_unit_keys(pixels)[1:]


def test_entries_spill_to_disk_whole_and_load_back(tmp_path, shapes):
    model_path = build_tiny_model("composed", tmp_path / "model")
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    batch = _batch(model_path, shapes)
    in_memory = FeatureCache.for_model(model, **QUIET)
    spilled = FeatureCache.for_model(model, folder=tmp_path / "cache", memory_bytes=0, **QUIET)
    first = in_memory.apply(model, dict(batch))
    second = spilled.apply(model, dict(batch))
    assert spilled.summary()["on_disk"] == 4 and not list((tmp_path / "cache").rglob("*.partial"))
    again = FeatureCache.for_model(model, folder=tmp_path / "cache", memory_bytes=0, **QUIET)  # a new process
    third = again.apply(model, dict(batch))
    assert again.computed == 0 and again.hits == 4
    for name in ("vision_patches", "vision_summary"):
        assert torch.equal(first[name], second[name]) and torch.equal(first[name], third[name])


def test_off_where_not_exact_and_says_why(tmp_path, tiny_models):
    model_path = build_tiny_model("composed", tmp_path / "model")
    messages = []
    vision_trains = prepare_for_training(model_path, TrainableSetup(method="full", train="all"), torch.float32, **QUIET)
    assert FeatureCache.for_model(vision_trains, log=messages.append) is None and "trains" in messages[-1]
    smolvlm = prepare_for_training(str(tiny_models["llava"]), TrainableSetup(), torch.float32, **QUIET)
    assert FeatureCache.for_model(smolvlm, log=messages.append) is None and "cannot take" in messages[-1]


def test_training_with_and_without_the_cache_ends_at_the_same_loss(tmp_path, shapes):
    model_path = build_tiny_model("composed", tmp_path / "model")
    common = dict(model=str(model_path), data=str(shapes["jsonl"]), epochs=3, batch_size=4, learning_rate=1e-3,
                  num_workers=0, report_to="none", logging_steps=1, preflight=False, **QUIET)
    cached = train(output=str(tmp_path / "cached"), **common)
    plain = train(output=str(tmp_path / "plain"), feature_cache=False, **common)
    assert cached["feature_cache"]["computed"] == 8 and cached["feature_cache"]["reused"] == 16
    assert plain["feature_cache"] is None
    assert abs(cached["final_train_loss"] - plain["final_train_loss"]) < 1e-4, (cached, plain)


def test_smolvlm_cached_step_equals_the_uncached_one(tiny_models, shapes):
    """SmolVLM / Idefics3 takes features after its connector: exact when LoRA trains the language model only
    (the default), with image tiles (rows padded with empty tiles) in the batch."""
    model_path = str(tiny_models["smolvlm"])
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    model.train()
    batch = _batch(model_path, shapes, image_size=None)
    cache = FeatureCache.for_model(model, **QUIET)
    assert cache is not None
    plain_loss, plain_grads = _loss_and_grads(model, {k: v for k, v in batch.items() if k != IMAGE_KEYS})
    for _ in range(2):
        loss, grads = _loss_and_grads(model, cache.apply(model, dict(batch)))
        assert torch.allclose(loss, plain_loss, atol=1e-6)
        for name, grad in grads.items():
            assert torch.allclose(grad, plain_grads[name], atol=1e-6), name
    assert cache.computed == 4 and cache.hits == 4
    connector_trains = prepare_for_training(model_path, TrainableSetup(train="connector+language"), torch.float32,
                                            **QUIET)
    messages = []
    assert FeatureCache.for_model(connector_trains, log=messages.append) is None and "connector" in messages[-1]


def test_per_class_detection_runs_the_vision_encoder_once_per_image(tmp_path):
    """Every query about one image (one per class, and the negatives) shares one vision forward, in every epoch."""
    from visiontune.data.builtin.shapes import write_shape_detection

    instances = write_shape_detection(tmp_path / "canvases", count=6, seed=3, size=48, objects=(1, 3))
    summary = train(task="detect", model=str(build_tiny_model("composed", tmp_path / "model")), data=str(instances),
                    output=str(tmp_path / "run"), epochs=2, batch_size=4, num_workers=0, report_to="none",
                    preflight=False, **QUIET)
    cache = summary["feature_cache"]
    assert cache["computed"] == 6, cache  # 6 images, whatever the number of queries and epochs
    # the starts fitted before training encode every image first, so every training sample is a reuse
    assert cache["reused"] >= summary["samples"] > 12, (cache, summary["samples"])


def test_predictions_are_identical_with_and_without_the_cache_and_images_encode_once(tmp_path, shapes):
    from PIL import Image

    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference

    model_path = build_tiny_model("composed", tmp_path / "model")
    model, processor, _ = load_for_inference(str(model_path), **QUIET)
    task = get_task("detect", classes=["circle", "square", "triangle"])
    images = [Image.open(path).convert("RGB") for path in sorted(shapes["images"].glob("*.png"))[:3]]
    cached = Predictor(model, processor, task, batch_size=4, max_new_tokens=12)
    plain = Predictor(model, processor, task, batch_size=4, max_new_tokens=12)
    plain.features = None
    assert cached.features is not None
    assert cached.results(images) == plain.results(images)
    assert cached.features.computed == 3  # 3 images x 3 class queries: 3 vision forwards
