"""Detection sources: COCO instances, YOLO folders and datasets with an objects column, to clean records."""

import json

import pytest
from PIL import Image

from visiontune.data.loading import DataSpec, detect_format, load_box_records, resolve_split
from visiontune.data.records import DataError
from visiontune.data.sources.hf_datasets import guess_bbox_convention

QUIET = {"log": lambda *_: None}


def _image(path, size=(200, 100)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


def _coco(tmp_path, annotations, categories=None):
    for name in ("a.png", "b.png", "c.png"):
        _image(tmp_path / "img" / name)
    payload = {"images": [{"id": 10, "file_name": "a.png", "width": 200, "height": 100},
                          {"id": 20, "file_name": "b.png", "width": 200, "height": 100},
                          {"id": 30, "file_name": "c.png"}],  # no size given: read from the file
               "annotations": annotations,
               "categories": categories or [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"},
                                            {"id": 18, "name": "dog"}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(payload))
    return path


def _ann(index, image_id, category_id, bbox, crowd=0):
    return {"id": index, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": crowd}


def test_coco_instances(tmp_path):
    path = _coco(tmp_path, [_ann(1, 10, 18, [10, 10, 30, 20]), _ann(2, 10, 1, [150, 50, 100, 80]),  # clipped
                            _ann(3, 20, 90, [5, 5, 40, 40], crowd=1), _ann(4, 20, 1, [7, 7, 0, 10])])  # zero width
    logged = []
    records, classes, ids = load_box_records(DataSpec(path=str(path), images_dir=str(tmp_path / "img")),
                                             log=logged.append)
    assert detect_format(str(path)) == "coco"
    assert classes == ["person", "dog", "toothbrush"]  # by category id, ids kept for results files
    assert ids == {"person": 1, "dog": 18, "toothbrush": 90}
    by_id = {r.image_id: r for r in records}
    assert [(b.label, b.xyxy) for b in by_id["10"].boxes] == [("dog", (10, 10, 40, 30)), ("person", (150, 50, 200, 100))]
    assert [(b.label, b.crowd) for b in by_id["20"].boxes] == [("toothbrush", True)]
    assert by_id["30"].boxes == [] and (by_id["30"].width, by_id["30"].height) == (200, 100)  # an image with no objects
    assert any("1 boxes clipped" in line and "1 zero-area boxes dropped" in line for line in logged)
    subset, names, _ = load_box_records(DataSpec(path=str(path), images_dir=str(tmp_path / "img"),
                                                 class_names=["dog"]), log=logged.append)
    assert names == ["dog"] and sum(len(r.boxes) for r in subset) == 1
    assert "2 boxes of classes outside the 1 used were left out" in logged[-1]
    with pytest.raises(DataError, match=r"--class-names 'dogs' \(did you mean 'dog'\?\) not a class of the data; "
                                         r"its classes: person, dog, toothbrush"):
        load_box_records(DataSpec(path=str(path), images_dir=str(tmp_path / "img"), class_names=["dogs"]), **QUIET)


@pytest.mark.parametrize("annotation, message", [
    (_ann(1, 10, 7, [1, 1, 5, 5]), "category_id 7 is not in 'categories'"),
    (_ann(1, 10, 1, [1, 1, -5, 5]), "negative width or height"),
    (_ann(1, 99, 1, [1, 1, 5, 5]), "image_id 99 is not in 'images'"),
])
def test_coco_bad_annotations_error_or_skip(tmp_path, annotation, message):
    path = _coco(tmp_path, [annotation, _ann(2, 10, 1, [1, 1, 5, 5])])
    spec = DataSpec(path=str(path), images_dir=str(tmp_path / "img"))
    with pytest.raises(DataError, match=message) as error:
        load_box_records(spec, **QUIET)
    assert "annotations[0]" in str(error.value) and "--skip-bad-rows" in str(error.value)
    logged = []
    spec.skip_bad_rows = True
    records, _, _ = load_box_records(spec, log=logged.append)
    assert sum(len(r.boxes) for r in records) == 1 and "skipped 1 bad annotations" in logged[0]


def _yolo(tmp_path, lines, names="[cat, traffic light]"):
    root = tmp_path / "yolo"
    root.mkdir()
    (root / "data.yaml").write_text(f"path: .\ntrain: images/train\nval: images/val\nnames: {names}\n")
    _image(root / "images" / "train" / "one.jpg")
    _image(root / "images" / "train" / "empty.jpg")
    _image(root / "images" / "val" / "v.jpg")
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "one.txt").write_text("\n".join(lines) + "\n")
    return root


def test_yolo_folder(tmp_path, monkeypatch):
    root = _yolo(tmp_path, ["1 0.5 0.5 0.2 0.4", "0 0.1 0.1 0.1 0.1", "0 0.1 0.2 0.3 0.2 0.2 0.4"],
                 names="{0: cat, 1: traffic light}")
    assert detect_format(str(root)) == "yolo"
    records, classes, ids = load_box_records(DataSpec(path=str(root)), **QUIET)
    assert classes == ["cat", "traffic light"] and ids == {"cat": 0, "traffic light": 1}
    one = next(r for r in records if r.image_id == "one")
    boxes = [(b.label, tuple(round(v, 6) for v in b.xyxy)) for b in one.boxes]
    assert boxes == [("traffic light", (80.0, 30.0, 120.0, 70.0)), ("cat", (10.0, 5.0, 30.0, 15.0)),
                     ("cat", (20.0, 20.0, 60.0, 40.0))]  # the polygon's bounding box
    assert next(r for r in records if r.image_id == "empty").boxes == []  # no label file: no objects
    val, _, _ = load_box_records(DataSpec(path=str(root), split="val"), **QUIET)
    assert [r.image_id for r in val] == ["v"]
    monkeypatch.chdir(tmp_path)  # a relative folder, and a yaml without `path:`, resolve against the yaml's folder
    (root / "data.yaml").write_text((root / "data.yaml").read_text().replace("path: .\n", ""))
    relative, _, _ = load_box_records(DataSpec(path="yolo", split="val"), **QUIET)
    assert [r.image_id for r in relative] == ["v"]


@pytest.mark.parametrize("line, message", [("0 0.5 0.5 0.2", "5 numbers"), ("4 0.5 0.5 0.2 0.2", "not an index"),
                                           ("0 0.5 0.5 -0.2 0.2", "negative width")])
def test_yolo_bad_lines_error_or_skip(tmp_path, line, message):
    root = _yolo(tmp_path, ["1 0.5 0.5 0.2 0.4", line])
    with pytest.raises(DataError, match=message) as error:
        load_box_records(DataSpec(path=str(root)), **QUIET)
    assert "one.txt line 2" in str(error.value)
    records, _, _ = load_box_records(DataSpec(path=str(root), skip_bad_rows=True), **QUIET)
    assert sum(len(r.boxes) for r in records) == 1


def test_yolo_folder_without_splits_is_read_whole(tmp_path):
    """What supervision's `DetectionDataset.as_yolo` writes: data.yaml with `nc` and `names` only, images/ and
    labels/ beside it."""
    root = tmp_path / "as_yolo"
    root.mkdir()
    (root / "data.yaml").write_text("names:\n- cat\n- dog\nnc: 2\n")
    _image(root / "images" / "a.png")
    _image(root / "images" / "b.png")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n")
    for purpose in ("train", "eval"):
        spec, note = resolve_split(DataSpec(path=str(root)), purpose)
        records, classes, _ = load_box_records(spec, **QUIET)
        assert note == "no splits" and classes == ["cat", "dog"] and len(records) == 2
    a = next(r for r in records if r.image_id == "a")
    assert [(b.label, b.xyxy) for b in a.boxes] == [("dog", (80.0, 30.0, 120.0, 70.0))]
    with pytest.raises(DataError, match="no 'val' entry; splits: none"):
        load_box_records(DataSpec(path=str(root), split="val"), **QUIET)


VOC_OBJECT = ("<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
              "<difficult>{difficult}</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
              "<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")


def _voc_xml(filename, objects, size=(200, 100)):
    """An annotation as supervision's `as_pascal_voc` (and the VOC devkit) write it: 1-based xmin/ymin."""
    body = "".join(VOC_OBJECT.format(name=n, box=b, difficult=d) for n, b, d in objects)
    return (f"<annotation><folder>VOC</folder><filename>{filename}</filename><source><database>roboflow.ai"
            f"</database></source><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{body}</annotation>")


def test_pascal_voc_folders(tmp_path):
    # supervision's layout: annotations/*.xml beside images/
    root = tmp_path / "as_voc"
    (root / "annotations").mkdir(parents=True)
    _image(root / "images" / "a.jpg")
    _image(root / "images" / "b.jpg")
    (root / "annotations" / "a.xml").write_text(_voc_xml("a.jpg", [("cat", (11, 21, 50, 60), 0),
                                                                   ("dog", (1, 1, 200, 100), 1)]))
    (root / "annotations" / "b.xml").write_text(_voc_xml("b.jpg", []))
    for data in (root, root / "annotations"):
        assert detect_format(str(data)) == "voc"
        records, classes, _ = load_box_records(resolve_split(DataSpec(path=str(data)), "eval")[0], **QUIET)
        assert classes == ["cat", "dog"] and [r.image_id for r in records] == ["a", "b"]
        a = records[0]
        assert [(b.label, b.xyxy, b.crowd) for b in a.boxes] == [("cat", (10.0, 20.0, 50.0, 60.0), False),
                                                                 ("dog", (0.0, 0.0, 200.0, 100.0), True)]
        assert (a.width, a.height) == (200, 100) and a.image.endswith("images/a.jpg")
    # the devkit's layout, with its split lists
    devkit = tmp_path / "VOC2007"
    (devkit / "Annotations").mkdir(parents=True)
    (devkit / "ImageSets" / "Main").mkdir(parents=True)
    for name in ("x", "y"):
        _image(devkit / "JPEGImages" / f"{name}.jpg")
        (devkit / "Annotations" / f"{name}.xml").write_text(_voc_xml(f"{name}.jpg", [("cat", (5, 5, 20, 20), 0)]))
    (devkit / "ImageSets" / "Main" / "train.txt").write_text("x\n")
    (devkit / "ImageSets" / "Main" / "test.txt").write_text("y\n")
    (devkit / "ImageSets" / "Main" / "cat_train.txt").write_text("x  1\n")  # per-class lists are not splits
    for purpose, expected in (("train", "x"), ("eval", "y")):
        spec, note = resolve_split(DataSpec(path=str(devkit)), purpose)
        assert [r.image_id for r in load_box_records(spec, **QUIET)[0]] == [expected], note
    # bad input names the file; --skip-bad-rows counts and skips it
    (root / "annotations" / "c.xml").write_text(_voc_xml("missing.jpg", [("cat", (1, 1, 5, 5), 0)]))
    with pytest.raises(DataError, match="c.xml: image 'missing.jpg' not found .*--images-dir"):
        load_box_records(DataSpec(path=str(root)), **QUIET)
    (root / "annotations" / "c.xml").write_text(_voc_xml("a.jpg", [("cat", (30, 1, 5, 5), 0)]))
    with pytest.raises(DataError, match="c.xml object 1: .*x2 < x1"):
        load_box_records(DataSpec(path=str(root)), **QUIET)
    (root / "annotations" / "c.xml").write_text("<annotation><filename>a.jpg")
    with pytest.raises(DataError, match="c.xml: not readable XML"):
        load_box_records(DataSpec(path=str(root)), **QUIET)
    assert len(load_box_records(DataSpec(path=str(root), skip_bad_rows=True), **QUIET)[0]) == 2


def _objects_dataset(tmp_path, boxes, categories, with_class_label=True):
    import datasets

    category = datasets.ClassLabel(names=["cat", "dog"]) if with_class_label else datasets.Value("string")
    features = datasets.Features({"image": datasets.Image(), "width": datasets.Value("int32"),
                                  "height": datasets.Value("int32"),
                                  "objects": {"bbox": datasets.List(datasets.List(datasets.Value("float32"))),
                                              "category": datasets.List(category)}})
    rows = {"image": [Image.new("RGB", (200, 100))] * len(boxes), "width": [200] * len(boxes),
            "height": [100] * len(boxes), "objects": [{"bbox": b, "category": c} for b, c in zip(boxes, categories)]}
    path = tmp_path / "objects"
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(path))
    return path


def test_dataset_objects_guess_and_override(tmp_path):
    # xyxy, normalised: (0.5, 0.2)-(0.9, 0.8) cannot be xywh (0.5 + 0.9 > 1)
    path = _objects_dataset(tmp_path, [[[0.5, 0.2, 0.9, 0.8]], []], [[1], []])
    logged = []
    records, classes, _ = load_box_records(DataSpec(path=str(path)), log=logged.append)
    assert classes == ["cat", "dog"] and "read as xyxy, normalised" in logged[0]
    assert [(b.label, tuple(round(v, 3) for v in b.xyxy)) for b in records[0].boxes] == [("dog", (100, 20, 180, 80))]
    assert records[1].boxes == []
    forced, _, _ = load_box_records(DataSpec(path=str(path), bbox_format="cxcywh", bbox_normalised=True), **QUIET)
    assert tuple(round(v, 3) for v in forced[0].boxes[0].xyxy) == (10, 0, 190, 60)  # clipped at the top


def test_dataset_objects_string_labels(tmp_path):
    path = _objects_dataset(tmp_path, [[[10, 10, 20, 30], [50, 50, 10, 10]]], [["dog", "bird"]], with_class_label=False)
    with pytest.raises(DataError, match="'bird' is not a known class"):
        load_box_records(DataSpec(path=str(path), class_names=["dog", "cat"]), **QUIET)
    records, classes, _ = load_box_records(DataSpec(path=str(path)), **QUIET)
    assert classes == ["bird", "dog"]
    assert [(b.label, b.xyxy) for b in records[0].boxes] == [("dog", (10, 10, 30, 40)), ("bird", (50, 50, 60, 60))]


def test_bbox_convention_guess():
    assert guess_bbox_convention([([10, 10, 150, 95], 200, 100)])[:2] == ("xyxy", False)
    assert guess_bbox_convention([([100, 10, 50, 20], 200, 100)])[:2] == ("xywh", False)  # x2 < x1 as xyxy
    assert guess_bbox_convention([([10, 10, 20, 20], 200, 100)])[:2] == ("xywh", False)  # both fit: COCO's
    with pytest.raises(DataError, match="--bbox-format"):
        guess_bbox_convention([([150, 10, 120, 20], 200, 100)])
