import json

import pytest

from visiontune.data.loading import DataSpec, load_caption_records
from visiontune.data.records import DataError


def test_coco_and_jsonl_give_the_same_records(shapes):
    coco = load_caption_records(DataSpec(path=str(shapes["coco"])))
    jsonl = load_caption_records(DataSpec(path=str(shapes["jsonl"])))
    assert [r.captions for r in coco] == [r.captions for r in jsonl]
    assert all(r.load_image().mode == "RGB" for r in coco[:2])


def test_coco_groups_several_references(tmp_path, shapes):
    payload = json.loads(shapes["coco"].read_text())
    payload["annotations"].append({"id": 99, "image_id": 0, "caption": "another description"})
    path = tmp_path / "multi.json"  # the shared fixture's folder stays as it is
    path.write_text(json.dumps(payload))
    records = load_caption_records(DataSpec(path=str(path), images_dir=str(shapes["coco"].parent)))
    assert len(records[0].captions) == 2


def test_columns_auto_detected_and_named(tmp_path, shapes):
    rows = [json.loads(line) for line in shapes["jsonl"].read_text().splitlines()]
    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps({"picture": "x/" + r["image"], "sentences": [{"raw": r["caption"]}]}) + "\n"
                           for r in rows))
    records = load_caption_records(DataSpec(path=str(odd), images_dir=str(shapes["coco"].parent / "x")))
    assert records[0].captions == [rows[0]["caption"]]
    weird = tmp_path / "weird.jsonl"
    weird.write_text(json.dumps({"foo": "a.png", "bar": "text"}) + "\n")
    with pytest.raises(DataError, match="columns found: foo, bar.*--image-column"):
        load_caption_records(DataSpec(path=str(weird)))
    records = load_caption_records(DataSpec(path=str(weird), image_column="foo", caption_column="bar"))
    assert records[0].captions == ["text"]


def test_empty_caption_is_an_error_or_counted_skip(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"image": "a.png", "caption": "ok"}\n{"image": "b.png", "caption": "  "}\n')
    with pytest.raises(DataError, match="d.jsonl line 2: empty or missing caption.*--skip-bad-rows"):
        load_caption_records(DataSpec(path=str(path)))
    messages = []
    records = load_caption_records(DataSpec(path=str(path), skip_bad_rows=True), log=messages.append)
    assert len(records) == 1 and "skipped 1" in messages[0]


def test_save_to_disk_folder(tmp_path, shapes):
    import datasets
    from PIL import Image

    folder = shapes["coco"].parent
    rows = [json.loads(line) for line in shapes["jsonl"].read_text().splitlines()]
    dataset = datasets.Dataset.from_dict({"img": [str(folder / r["image"]) for r in rows],
                                          "text": [r["caption"] for r in rows]}).cast_column("img", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "saved"))
    records = load_caption_records(DataSpec(path=str(tmp_path / "saved")))
    assert records[3].captions == [rows[3]["caption"]]
    assert isinstance(records[3].load_image(), Image.Image)


def test_max_samples_and_deterministic_shuffle(shapes):
    first = load_caption_records(DataSpec(path=str(shapes["jsonl"]), shuffle=True, seed=3, max_samples=4))
    again = load_caption_records(DataSpec(path=str(shapes["jsonl"]), shuffle=True, seed=3, max_samples=4))
    other = load_caption_records(DataSpec(path=str(shapes["jsonl"]), shuffle=True, seed=4, max_samples=4))
    assert len(first) == 4 and [r.image for r in first] == [r.image for r in again]
    assert [r.image for r in first] != [r.image for r in other]


def test_missing_path_is_clear():
    with pytest.raises(DataError, match="no such file"):
        load_caption_records(DataSpec(path="./nope/data.jsonl"))


def test_a_source_of_the_wrong_kind_for_the_task_says_what_it_got(shapes, shape_classes):
    from visiontune.data.loading import DataSpec, load_box_records, load_caption_records, load_labelled_records

    with pytest.raises(DataError, match="captions come as .*got a imagefolder source"):
        load_caption_records(DataSpec(str(shape_classes)))
    with pytest.raises(DataError, match="classification data is .*got a coco source"):
        load_labelled_records(DataSpec(str(shapes["coco"])))
    with pytest.raises(DataError, match="detection data is .*got a table source"):
        load_box_records(DataSpec(str(shapes["jsonl"])))
    with pytest.raises(DataError, match="unknown data format 'arrow'"):
        load_caption_records(DataSpec(str(shapes["jsonl"]), format="arrow"))


@pytest.mark.parametrize("delimiter", [";", "\t", ","])
def test_csv_delimiter_is_read_from_the_header(tmp_path, shapes, delimiter):
    rows = [json.loads(line) for line in shapes["jsonl"].read_text().splitlines()]
    table = tmp_path / "captions.csv"  # spreadsheets in many locales write ;-separated CSV
    table.write_text("\n".join([f"image{delimiter}caption"] + [f"{r['image']}{delimiter}{r['caption']}" for r in rows]))
    records = load_caption_records(DataSpec(path=str(table), images_dir=str(shapes["jsonl"].parent)))
    assert [r.captions for r in records] == [[r["caption"]] for r in rows]


def _split_folder(root, splits):
    from PIL import Image

    for split, count in splits.items():
        for label in ("red", "blue"):
            (root / split / label).mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (8, 8), label).save(root / split / label / f"{index}.png")
    return root


def test_evaluation_reads_the_test_split_by_default_and_says_so(tmp_path):
    """Without --split, evaluation reads test (else validation), training reads train; the line says which."""
    from visiontune.api.evaluate import _task_records
    from visiontune.config import EvalConfig

    folder = _split_folder(tmp_path / "data", {"train": 3, "test": 2})
    lines = []
    _, _, records = _task_records(EvalConfig(task="classify", data=str(folder), model=None), lines.append)
    assert len(records) == 4 and all("/test/" in r.image for r in records)
    assert any("split test (the default for evaluation among" in line and "4 records" in line for line in lines)
    _, _, records = _task_records(EvalConfig(task="classify", data=str(folder), split="train"), lines.append)
    assert len(records) == 6 and "split train, 6 records" in lines[-1]


def test_default_split_per_source_and_purpose(tmp_path):
    import datasets

    from visiontune.data.loading import resolve_split

    folder = _split_folder(tmp_path / "folder", {"train": 1, "val": 1})
    assert resolve_split(DataSpec(str(folder)), "train")[0].split == "train"
    assert resolve_split(DataSpec(str(folder)), "eval")[0].split == "val"
    saved = tmp_path / "saved"
    rows = {"text": ["a"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "validation": datasets.Dataset.from_dict(rows)}).save_to_disk(str(saved))
    assert resolve_split(DataSpec(str(saved)), "eval")[0].split == "validation"
    assert resolve_split(DataSpec("zoo:digits"), "eval")[0].split == "test"
    assert resolve_split(DataSpec("zoo:digits", split="train"), "eval")[0].split == "train"  # asked for: kept
    only = _split_folder(tmp_path / "only", {"train": 1})
    spec, line = resolve_split(DataSpec(str(only)), "eval")
    assert spec.split == "train" and "among train" in line  # the one split there is, named
