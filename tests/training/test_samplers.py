"""--group-by-length and --balance sampler, through the trainer `train` builds: each fails if its flag is ignored."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from visiontune.api.train import build_trainer
from visiontune.config import TrainConfig, build_config

QUIET = dict(log=lambda *_: None)
LIGHT = dict(num_workers=0, report_to="none", preflight=False, probe_start=False, keep_skills=False,
             feature_cache=False, batch_size=8)


def _order(trainer) -> list[int]:
    return list(trainer._get_train_sampler(trainer.train_dataset))


def _padding(order: list[int], lengths: list[int], batch: int = 8) -> int:
    return sum(max(lengths[i] for i in order[s:s + batch]) * len(order[s:s + batch])
               - sum(lengths[i] for i in order[s:s + batch]) for s in range(0, len(order), batch))


def test_group_by_length_batches_pad_less_than_the_default_order(tiny_models, tmp_path):
    from visiontune.data.builtin.shapes import write_shape_detection

    data = write_shape_detection(tmp_path / "canvases", count=48, seed=0, objects=(1, 6))
    padded = {}
    for grouped in (True, False):
        config = build_config(TrainConfig, dict(task="detect", model=str(tiny_models["smolvlm"]), data=str(data),
                                                output=str(tmp_path / f"run-{grouped}"), group_by_length=grouped,
                                                balance="none", **LIGHT))
        run, trainer, _, _ = build_trainer(config, **QUIET)
        lengths = run.train_set.answer_lengths(run.processor.tokenizer)
        assert len(set(lengths)) > 3  # box lists of 1 to 6 objects: answers really vary
        order = _order(trainer)
        assert sorted(order) == list(range(len(lengths)))  # every example once an epoch
        padded[grouped] = _padding(order, lengths)
    assert padded[True] < 0.7 * padded[False], padded


@pytest.mark.parametrize("balance", ["sampler", "none"])
def test_balance_sampler_draws_every_class_about_equally(tiny_models, tmp_path, balance):
    from visiontune.data.builtin.shapes import write_shape_classes

    data = write_shape_classes(tmp_path / "imbalanced", counts={"circle": 12, "square": 4, "triangle": 2})
    config = build_config(TrainConfig, dict(task="classify", model=str(tiny_models["smolvlm"]), data=str(data),
                                            output=str(tmp_path / "run"), balance=balance, **LIGHT))
    run, trainer, _, _ = build_trainer(config, **QUIET)
    torch.manual_seed(0)
    groups, sampler = run.train_set.groups(), trainer._get_train_sampler(trainer.train_dataset)
    drawn = Counter(groups[i] for _ in range(300) for i in sampler)  # 300 epochs' draws
    ratio = max(drawn.values()) / min(drawn.values())
    if balance == "sampler":
        assert ratio < 1.2, drawn
    else:
        assert ratio == pytest.approx(6.0, rel=0.05), drawn  # the data's own 12:2, drawn once per epoch
