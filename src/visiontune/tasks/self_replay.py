"""Kept skills: before fine-tuning, the model's own answers to general prompts on a sample of the training
images, mixed into the training set (Learning without Forgetting's idea: it needs no extra data).

A single-task fine-tune mostly shifts what the model says: trained on nothing but box lists, a model answers
every request with a box list (or `none`). Replaying its own earlier answers on the new images keeps the other
behaviour in the training distribution. `share` is the fraction of training examples that are replay.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

from ..data.records import Record
from .base import Example, system_turn, user_turn

REPLAY_PROMPTS = ("Describe this image in one sentence.", "What is in this image?")
DEFAULT_SHARE = 0.1
# Answers generated before training; more replay examples reuse them in turn. An answer costs about what a
# training step on one example costs, so a large replay generates a quarter of its examples' answers (each then
# seen ~4 times), and never fewer than 64 distinct ones (detection's kept captions were measured with 44).
MIN_REPLAY_IMAGES, REPLAY_REUSE = 64, 4
REPLAY_MAX_NEW_TOKENS = 48
# Of the replay images of a detection set, the share that are a crop around one labelled object: a model asked to
# describe a close view of one object afterwards (a caption set, a user's photo) needs replay answers on such
# views, not only on the full scenes. CROP_CONTEXT: the crop's side over the object's longer side.
OBJECT_CROP_SHARE, CROP_CONTEXT = 0.5, (1.2, 1.6)


@dataclass
class ObjectCrop:
    """A square crop with some context around one object of a record's image, cut when the image is loaded."""

    record: Record
    xyxy: tuple[float, float, float, float]  # in the record's pixel coordinates
    context: float

    def load_image(self):
        image = self.record.load_image()
        scale_x = image.width / (self.record.width or image.width)
        scale_y = image.height / (self.record.height or image.height)
        x1, y1, x2, y2 = (value * scale for value, scale in zip(self.xyxy, (scale_x, scale_y) * 2))
        side = min(max(round(max(x2 - x1, y2 - y1) * self.context), 1), image.width, image.height)
        # Centred on the object, then moved inside the image where the context would leave it.
        left = min(max(round((x1 + x2 - side) / 2), 0), image.width - side)
        top = min(max(round((y1 + y2 - side) / 2), 0), image.height - side)
        return image.crop((left, top, left + side, top + side))


def replay_images(records: list[Record], rng: random.Random) -> list[Record]:
    """The records to replay on: each with objects becomes, at OBJECT_CROP_SHARE, a crop around one of them."""
    chosen = []
    for record in records:
        objects = [box for box in record.boxes if not box.crowd]
        if objects and rng.random() < OBJECT_CROP_SHARE:
            box = rng.choice(objects)
            crop = ObjectCrop(record, box.xyxy, rng.uniform(*CROP_CONTEXT))
            # The crop is a new image: the scene's boxes and size do not describe it.
            record = replace(record, image=crop, image_id=f"{record.image_id}#{box.label}@{box.xyxy}", boxes=[],
                             width=None, height=None)
        chosen.append(record)
    return chosen


def replay_image_count(count: int) -> int:
    """How many distinct images get a generated answer for `count` replay examples."""
    return min(count, max(MIN_REPLAY_IMAGES, count // REPLAY_REUSE))


def replay_count(task_examples: int, share: float) -> int:
    """Replay examples to add so that they are `share` of all training examples."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"--replay-share is the fraction of training examples that replay the model's own "
                         f"answers, in [0, 1); got {share}")
    return round(task_examples * share / (1.0 - share))


def answer_spread(answers: list[str], shown: int = 3) -> str:
    """How varied the replayed answers are: a model whose answers barely depend on the image replays one answer
    everywhere, and the fine-tuned model then gives it to every image."""
    counts = Counter(answer for answer in answers if answer)
    common = ", ".join(f"{answer[:40]!r} x{n}" for answer, n in counts.most_common(shown))
    return f"{len(counts)} distinct, most common: {common}" if counts else "no answers"


def self_replay_examples(model, processor, records: list[Record], count: int, system_prompt: str | None = None,
                         batch_size: int = 8, seed: int = 0, log=print) -> list[tuple[Record, Example]]:
    """`count` (record, example) pairs: a general prompt about a training image (or a crop around one of its
    objects), answered as `model` answers it now (greedy). `replay_image_count(count)` images are drawn without
    replacement, then reused in turn."""
    from ..inference.predictor import Predictor
    from .caption.task import CaptionTask

    if count <= 0 or not records:
        return []
    rng = random.Random(seed)
    chosen = replay_images(rng.sample(records, min(replay_image_count(count), len(records))), rng)
    prompts = [[*([system_turn(system_prompt)] if system_prompt else []), user_turn(REPLAY_PROMPTS[i % len(REPLAY_PROMPTS)])]
               for i in range(len(chosen))]
    was_training = model.training
    model.eval()
    predictor = Predictor(model, processor, CaptionTask(), batch_size=batch_size, max_new_tokens=REPLAY_MAX_NEW_TOKENS)
    answers = []
    for start in range(0, len(chosen), batch_size):
        images = [record.load_image() for record in chosen[start:start + batch_size]]
        answers += predictor.generate(images, prompts[start:start + batch_size])["texts"]
    model.train(was_training)
    pairs = [(record, Example(messages, answer)) for record, messages, answer in zip(chosen, prompts, answers) if answer]
    log(f"kept skills: {len(pairs)} of the model's own answers to general prompts on training images, replayed as "
        f"{count} training examples (--no-keep-skills to train without); {answer_spread(answers)}")
    return [pairs[i % len(pairs)] for i in range(count)] if pairs else []
