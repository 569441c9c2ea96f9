"""Classification sources: image folders, tables, ClassLabel datasets; label resolution and its errors."""

import json

import pytest

from visiontune.data.labels import read_class_descriptions
from visiontune.data.loading import DataSpec, load_labelled_records
from visiontune.data.records import DataError


def _rows(folder):
    return [(str(p.relative_to(folder)), p.parent.name) for p in sorted(folder.rglob("*.png"))]


def test_image_folder_classes_and_splits(tmp_path, shape_classes):
    records, classes = load_labelled_records(DataSpec(path=str(shape_classes)))
    assert classes == ["circle", "square", "triangle"]
    assert len(records) == 12 and {r.label for r in records} == set(classes)
    # root/train/<class> and root/test/<class>: the train split by default, --split picks another
    import shutil

    shutil.copytree(shape_classes, tmp_path / "pets" / "train")
    shutil.copytree(shape_classes / "circle", tmp_path / "pets" / "test" / "circle")
    (tmp_path / "pets" / "test" / "square").mkdir()
    train, _ = load_labelled_records(DataSpec(path=str(tmp_path / "pets")))
    test, test_classes = load_labelled_records(DataSpec(path=str(tmp_path / "pets"), split="test"))
    assert len(train) == 12 and len(test) == 4 and test_classes == ["circle", "square"]
    with pytest.raises(DataError, match="no split folder 'val'"):
        load_labelled_records(DataSpec(path=str(tmp_path / "pets"), split="val"))


@pytest.mark.parametrize("layout", ["jsonl-names", "csv-odd-columns", "jsonl-indices"])
def test_table_layouts(tmp_path, shape_classes, layout):
    rows = _rows(shape_classes)
    classes = ["circle", "square", "triangle"]
    spec_args = {}
    if layout == "jsonl-names":
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps({"image": i, "label": c}) + "\n" for i, c in rows))
    elif layout == "csv-odd-columns":
        path = tmp_path / "d.csv"
        path.write_text("picture,category,notes\n" + "".join(f"{i},{c},x\n" for i, c in rows))
    else:
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps({"file_name": i, "y": classes.index(c)}) + "\n" for i, c in rows))
        spec_args["class_names"] = classes
    records, found = load_labelled_records(DataSpec(path=str(path), images_dir=str(shape_classes), **spec_args))
    assert found == classes
    assert [r.label for r in records] == [c for _, c in rows]
    assert records[0].load_image().size == (96, 96)


def test_integer_labels_without_names_become_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"image": f"{i}.png", "label": i % 3}) + "\n" for i in range(6)))
    records, classes = load_labelled_records(DataSpec(path=str(path)))
    assert classes == ["0", "1", "2"] and records[4].label == "1"


def test_classlabel_dataset_names_come_from_the_feature(tmp_path, shape_classes):
    import datasets

    rows = _rows(shape_classes)
    names = ["circle", "square", "triangle"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    dataset = datasets.Dataset.from_dict({"img": [str(shape_classes / i) for i, _ in rows],
                                          "label": [names.index(c) for _, c in rows]}, features=features)
    datasets.DatasetDict({"train": dataset, "test": dataset.select(range(3))}).save_to_disk(str(tmp_path / "saved"))
    records, classes = load_labelled_records(DataSpec(path=str(tmp_path / "saved")))
    assert classes == names and [r.label for r in records] == [c for _, c in rows]
    test, _ = load_labelled_records(DataSpec(path=str(tmp_path / "saved"), split="test"))
    assert len(test) == 3
    # a model's class list in another order: labels are still names, checked against the model's list
    reordered, kept = load_labelled_records(DataSpec(path=str(tmp_path / "saved")), classes=names[::-1])
    assert kept == names[::-1] and [r.label for r in reordered] == [c for _, c in rows]


def test_unknown_label_is_an_error_naming_row_and_label_or_a_counted_skip(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"image": "a.png", "label": "cat"}\n{"image": "b.png", "label": "dog"}\n'
                    '{"image": "c.png", "label": "cow"}\n')
    with pytest.raises(DataError, match=r"d.jsonl line 3: label 'cow' is not a known class.*--skip-bad-rows"):
        load_labelled_records(DataSpec(path=str(path), class_names=["cat", "dog"]))
    messages = []
    records, _ = load_labelled_records(DataSpec(path=str(path), class_names=["cat", "dog"], skip_bad_rows=True),
                                       log=messages.append)
    assert len(records) == 2 and "skipped 1" in messages[0]
    # evaluation data with a class the model does not know
    with pytest.raises(DataError, match="line 3: label 'cow'"):
        load_labelled_records(DataSpec(path=str(path)), classes=["cat", "dog"])


def test_missing_label_column_lists_columns(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"image": "a.png", "foo": "cat"}\n')
    with pytest.raises(DataError, match="columns found: foo.*--label-column"):
        load_labelled_records(DataSpec(path=str(path)))
    records, _ = load_labelled_records(DataSpec(path=str(path), label_column="foo", class_names=["cat", "dog"]))
    assert records[0].label == "cat"


def test_class_descriptions_file(tmp_path):
    path = tmp_path / "descriptions.txt"
    path.write_text("# martian terrain\nael: aeolian ridges\ncli: a cliff face\n")
    assert read_class_descriptions(path, ["ael", "cli"]) == {"ael": "aeolian ridges", "cli": "a cliff face"}
    with pytest.raises(DataError, match="'cli' is not one of the classes"):
        read_class_descriptions(path, ["ael", "aec"])
