"""The chat task: conversations in three layouts, loss on every assistant turn only, and a tiny model that
learns 8 two-turn conversations."""

from __future__ import annotations

import json

import pytest
import torch

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import predict
from visiontune.api.train import train
from visiontune.data.loading import DataSpec
from visiontune.data.records import DataError
from visiontune.models.prompt_encoding import IGNORE_INDEX, VLMCollator
from visiontune.models.vlm import load_processor
from visiontune.tasks import get_task
from visiontune.tasks.chat.formats import load_conversation_records
from visiontune.training.examples import ExampleDataset

from conftest import OVERFIT

QUIET = dict(log=lambda *_: None)
QUESTION = "What colour is the shape?"
FOLLOW_UP = "And which shape is it?"


def _conversations(shapes) -> list[dict]:
    """LLaVA rows from the shapes captions: 'a red circle on a blue background' -> red, then circle."""
    rows = []
    for line in shapes["jsonl"].read_text().splitlines():
        row = json.loads(line)
        words = row["caption"].split()
        rows.append({"image": str(shapes["jsonl"].parent / row["image"]), "conversations": [
            {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": words[1]},
            {"from": "human", "value": FOLLOW_UP}, {"from": "gpt", "value": f"a {words[2]}"}]})
    return rows


def test_three_layouts_load_as_the_same_conversation(shapes, tmp_path):
    folder = shapes["jsonl"].parent
    llava = {"image": "images/0000.png", "conversations": [{"from": "human", "value": "<image>\nQ1"},
                                                           {"from": "gpt", "value": "A1"}]}
    sharegpt = {"images": ["images/0000.png"], "system": "Be brief.",
                "messages": [{"role": "user", "content": "<image>Q1"}, {"role": "assistant", "content": "A1"}]}
    messages = {"images": ["images/0000.png"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A1"}]}]}
    (tmp_path / "llava.json").write_text(json.dumps([llava]))  # beside, not inside, the shared fixture
    (tmp_path / "sharegpt.jsonl").write_text(json.dumps(sharegpt) + "\n")
    (tmp_path / "messages.jsonl").write_text(json.dumps(messages) + "\n")
    expected = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q1"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "A1"}]}]
    for name in ("llava.json", "sharegpt.jsonl", "messages.jsonl"):
        record = load_conversation_records(DataSpec(str(tmp_path / name), images_dir=str(folder)))[0]
        dialogue = [m for m in record.conversation if m["role"] != "system"]
        assert dialogue == expected, name
        assert record.load_image().size == (96, 96)
    assert load_conversation_records(DataSpec(str(tmp_path / "sharegpt.jsonl"), images_dir=str(folder)))[0] \
        .conversation[0]["role"] == "system"

    # a datasets folder with an images column of PIL images and HF messages
    import datasets
    from PIL import Image

    table = datasets.Dataset.from_dict({"images": [[Image.open(folder / "images/0000.png"),
                                                    Image.open(folder / "images/0001.png")]],
                                        "messages": [json.loads(json.dumps(messages["messages"]))]})
    table = table.map(lambda row: {"messages": [{"role": "user", "content": [
        {"type": "image", "text": None}, {"type": "image", "text": None}, {"type": "text", "text": "Q1"}]},
        row["messages"][1]]})
    table.save_to_disk(str(tmp_path / "saved"))
    record = load_conversation_records(DataSpec(str(tmp_path / "saved")))[0]
    assert len(record.load_images()) == 2 and record.conversation[1]["content"][0]["text"] == "A1"


@pytest.mark.parametrize("row,problem", [
    ({"image": "a.png", "conversations": [{"from": "gpt", "value": "A"}]}, "alternate"),
    ({"image": "a.png", "conversations": [{"from": "human", "value": "<image><image>Q"}, {"from": "gpt", "value": "A"}]},
     "names 2 image"),
    ({"image": "a.png", "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"},
                                          {"from": "human", "value": "<image>Q"}, {"from": "gpt", "value": "B"}]},
     "later turn"),
    ({"conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}, "no image"),
    ({"image": "a.png", "conversations": [{"from": "narrator", "value": "Q"}]}, "role 'narrator'"),
])
def test_bad_conversations_name_the_row_and_the_problem(tmp_path, row, problem):
    (tmp_path / "bad.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"bad.jsonl line 1.*{problem}"):
        load_conversation_records(DataSpec(str(tmp_path / "bad.jsonl")))


def test_label_mask_covers_exactly_the_assistant_turns(tiny_models, shapes, tmp_path):
    (tmp_path / "chat.json").write_text(json.dumps(_conversations(shapes)))
    records = load_conversation_records(DataSpec(str(tmp_path / "chat.json")))
    task = get_task("chat")
    processor = load_processor(str(tiny_models["smolvlm"]), **QUIET)
    batch = VLMCollator(processor)([ExampleDataset(records[:1], task)[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    decode = processor.tokenizer.decode
    trained = decode(ids[labels != IGNORE_INDEX])
    words = records[0].conversation[1]["content"][0]["text"], records[0].conversation[3]["content"][0]["text"]
    assert words[0] in trained and words[1] in trained
    assert QUESTION not in trained and FOLLOW_UP not in trained
    # the trained tokens are two runs (one per answer, each with its end of turn) and the follow-up sits between
    runs = torch.diff((labels != IGNORE_INDEX).int()).eq(1).sum()
    assert int(runs) == 2
    first_answer = int((labels != IGNORE_INDEX).int().argmax())
    assert FOLLOW_UP in decode(ids[(labels == IGNORE_INDEX) & (torch.arange(len(ids)) > first_answer)])


def test_tiny_model_learns_conversations_and_untrained_does_not(tiny_models, shapes, tmp_path):
    data = tmp_path / "chat.json"
    data.write_text(json.dumps(_conversations(shapes)))
    output = tmp_path / "run"
    summary = train(task="chat", model=str(tiny_models["smolvlm"]), data=str(data), output=str(output),
                    learning_rate=3e-3, **QUIET, **OVERFIT)
    assert summary["final_train_loss"] < 0.15, summary
    # the follow-up answer, given the conversation so far
    metrics = evaluate(model=str(output), data=str(data), output=str(tmp_path / "eval"), **QUIET)
    assert metrics["exact_match"] == 1.0 and metrics["token_f1"] == 1.0, metrics
    assert (tmp_path / "eval" / "metrics.json").exists() and "CIDEr" in metrics
    # predict on plain images, asked the first question: the colours
    rows = predict(model=str(output), images=[str(shapes["images"])], prompt=QUESTION, **QUIET)
    colours = {row["image"].split("/")[-1]: row["prediction"] for row in rows}
    expected = {r["image"].split("/")[-1]: r["conversations"][1]["value"] for r in _conversations(shapes)}
    assert colours == expected

    untrained = evaluate(model=str(tiny_models["smolvlm"]), task="chat", data=str(data), max_new_tokens=8, **QUIET)
    assert untrained["exact_match"] == 0.0
