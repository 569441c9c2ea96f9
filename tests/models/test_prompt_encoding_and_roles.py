import sys

import pytest
import torch
from PIL import Image

from visiontune.models.prompt_encoding import IGNORE_INDEX, PromptTooLongError, VLMCollator, answer_suffix
from visiontune.models.roles import module_roles, parameters_by_role
from visiontune.models.vlm import TrainableSetup, load_processor, prepare_for_training
from visiontune.tasks import get_task


def _examples(task):
    return [{"image": Image.new("RGB", (90, 60), (200, 0, 0)), "messages": task.messages(), "target": "a red circle"},
            {"image": Image.new("RGB", (40, 100), (0, 0, 200)), "messages": task.messages(), "target": "blue"}]


@pytest.mark.parametrize("family", ["smolvlm", "llava"])
def test_labels_cover_exactly_the_answer_and_rows_are_left_padded(tiny_models, family):
    processor = load_processor(tiny_models[family])
    task = get_task("caption")
    batch = VLMCollator(processor)(_examples(task))
    for row, example in enumerate(_examples(task)):
        labels = batch["labels"][row]
        answer = processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
        assert answer == answer_suffix(processor, example["messages"], example["target"])
        # The answer is a contiguous block that ends the row; padding is on the left.
        positions = torch.where(labels != IGNORE_INDEX)[0]
        assert positions[-1] == labels.shape[0] - 1 and (positions.diff() == 1).all()
    assert batch["attention_mask"][1, 0] == 0 and batch["attention_mask"][:, -1].all()


def test_max_length_that_would_cut_image_tokens_is_refused_with_the_minimum(tiny_models):
    processor = load_processor(tiny_models["smolvlm"])
    task = get_task("caption")
    with pytest.raises(PromptTooLongError, match=r"prompt alone is \d+ tokens.*--max-length \d+ or more"):
        VLMCollator(processor, max_length=20)(_examples(task))


def test_roles_from_structure_match_the_family_table(tiny_models):
    from transformers import AutoModelForImageTextToText

    from visiontune.models.roles import _structural_paths

    for family in ("smolvlm", "llava"):
        model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
        table = module_roles(model)
        structural = _structural_paths(model)
        assert set(table.paths["vision"]) == set(structural["vision"])
        assert set(table.paths["connector"]) == set(structural["connector"])
        counts = parameters_by_role(model)
        assert counts["other"] == 0 and all(counts[r] > 0 for r in ("vision", "connector", "language"))


@pytest.mark.parametrize("method,train,expect", [
    ("lora", None, {"language"}), ("full", None, {"connector", "language"}), ("full", "all", {"vision", "connector", "language"}),
    ("lora", "connector+language", {"connector", "language"})])
def test_freezing_follows_roles(tiny_models, method, train, expect):
    model = prepare_for_training(tiny_models["smolvlm"], TrainableSetup(method=method, train=train), torch.float32,
                                 log=lambda *_: None)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    roles = module_roles(base)
    trained = set()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            clean = name.replace("base_model.model.", "").replace(".modules_to_save.default", "")
            trained.add(roles.role_of(clean))
    assert trained == expect


def test_qlora_without_bitsandbytes_is_a_clear_error(tiny_models, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as if not installed: importing it fails
    with pytest.raises(RuntimeError, match=r"qlora needs bitsandbytes: pip install 'visiontune\[qlora\]'"):
        prepare_for_training(tiny_models["smolvlm"], TrainableSetup(method="qlora"), torch.float32)
