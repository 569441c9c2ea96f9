"""Kept skills: a detection fine-tune with self-replay still answers a general prompt as the model did before
it; the same fine-tune without it does not."""

import json

import pytest

from visiontune.api.train import train
from visiontune.data.builtin.shapes import write_shape_detection
from visiontune.inference.predictor import Predictor
from visiontune.models.vlm import load_for_inference
from visiontune.tasks.caption.task import CaptionTask
from visiontune.tasks.self_replay import REPLAY_PROMPTS, replay_count, replay_image_count

from conftest import OVERFIT

QUIET = {"log": lambda *_: None}


def test_replay_count_is_the_asked_share_of_all_examples():
    assert replay_count(90, 0.1) == 10 and replay_count(30, 0.5) == 30 and replay_count(30, 0.0) == 0
    with pytest.raises(ValueError, match="replay-share"):
        replay_count(30, 1.0)


def test_a_large_replay_reuses_answers_and_a_small_one_does_not():
    assert replay_image_count(44) == 44 and replay_image_count(178) == 64 and replay_image_count(6111) == 1527


def _general_answers(model_path, images) -> list[str]:
    model, processor, _ = load_for_inference(model_path, **QUIET)
    predictor = Predictor(model, processor, CaptionTask(), max_new_tokens=12)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": REPLAY_PROMPTS[0]}]}]
    return predictor.generate(images, [prompt] * len(images))["texts"]


def test_detection_fine_tune_keeps_the_general_answers_only_with_self_replay(tiny_models, tmp_path):
    data = write_shape_detection(tmp_path / "data", count=6, seed=1, objects=(1, 3))
    images = [record["file_name"] for record in json.loads(data.read_text())["images"]]
    from PIL import Image

    pictures = [Image.open(data.parent / name).convert("RGB") for name in images]
    before = _general_answers(tiny_models["smolvlm"], pictures)
    settings = {**OVERFIT, "keep_skills": True, "epochs": 40, "learning_rate": 3e-3, "preflight": False,
                "measure_mfu": False}
    kept = train(task="detect", model=str(tiny_models["smolvlm"]), data=str(data), output=str(tmp_path / "kept"),
                 replay_share=0.5, **settings, **QUIET)
    plain = train(task="detect", model=str(tiny_models["smolvlm"]), data=str(data), output=str(tmp_path / "plain"),
                  **{**settings, "keep_skills": False}, **QUIET)
    assert kept["replay_examples"] > 0 and plain["replay_examples"] == 0
    with_replay = _general_answers(tmp_path / "kept", pictures)
    without = _general_answers(tmp_path / "plain", pictures)
    kept_similarity, plain_similarity = _similarity(with_replay, before), _similarity(without, before)
    # A random tiny model's answers are byte soup that does not always survive decoding and re-encoding,
    # so the test compares character overlap, not equality.
    assert kept_similarity >= 0.4 and plain_similarity <= 0.25, (kept_similarity, plain_similarity)


def _similarity(answers: list[str], reference: list[str]) -> float:
    from difflib import SequenceMatcher

    return sum(SequenceMatcher(None, a, b).ratio() for a, b in zip(answers, reference)) / len(reference)


def test_the_replay_log_shows_how_varied_the_answers_are():
    from visiontune.tasks.self_replay import answer_spread

    spread = answer_spread(["a bag", "a pair of shoes", "a pair of shoes", "", "a shirt"], shown=2)
    assert spread == "3 distinct, most common: 'a pair of shoes' x2, 'a bag' x1"
    assert answer_spread(["", ""]) == "no answers"


def test_replay_on_a_detection_set_describes_close_views_of_its_objects_too():
    import random

    from PIL import Image

    from visiontune.data.records import Box, Record
    from visiontune.tasks.self_replay import replay_images

    scene = Image.new("RGB", (120, 80))
    scene.paste((255, 0, 0), (100, 60, 120, 80))  # an object in the corner: its crop is moved inside the image
    detection = Record(image=scene, image_id="scene", boxes=[Box("square", (100, 60, 120, 80))], width=120, height=80)
    plain = Record(image=scene, image_id="plain")
    chosen = replay_images([detection] * 20 + [plain] * 5, random.Random(0))
    crops = [record for record in chosen if record.image_id != "scene" and record.image_id != "plain"]
    assert 5 <= len(crops) <= 15 and all(record.image_id == "plain" for record in chosen[20:])
    for record in crops:
        image = record.load_image()
        assert image.width == image.height and 24 <= image.width <= 32  # 20 px object x 1.2-1.6 context
        assert image.getpixel((image.width - 1, image.height - 1)) == (255, 0, 0)
        assert 0.35 <= sum(pixel == (255, 0, 0) for pixel in image.getdata()) / image.width ** 2 <= 0.7
