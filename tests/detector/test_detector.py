"""The dedicated detector end to end on tiny random ViTs: it overfits 8 shape canvases with no NMS (mAP50
from ~0 to >= 0.9, no duplicates), its frozen backbone stays bit-identical, it saves/reloads, exports to ONNX
equal to PyTorch, runs int8 with its mAP reported, and predicts from ONNX with no torch imported."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visiontune.cli import main
from visiontune.data.builtin.shapes import write_shape_detection
from visiontune.data.loading import DataSpec, load_box_records
from visiontune.detector.config import DetectorTrainSettings
from visiontune.detector.evaluation import duplicate_rate, run_and_score
from visiontune.detector.model import Detector
from visiontune.detector.train import train_detector

QUIET = lambda *_: None
# Settings under which a tiny detector memorises 8 canvases in seconds on a CPU.
OVERFIT = dict(image_size=128, neck_channels=64, epochs=60, batch_size=8, augment=False, workers=0, warmup_steps=10,
               learning_rate=3e-3, ema_decay=0.0, eval_every=30)


def _save_tiny_vit(folder, family: str, patch: int, seed: int = 0):
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModel,
        Dinov2Config,
        Dinov2Model,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(seed)
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, patch_size=patch,
                  image_size=128)
    model = {"dinov2": lambda: Dinov2Model(Dinov2Config(**common)),
             "clip": lambda: CLIPVisionModel(CLIPVisionConfig(**common)),
             "siglip": lambda: SiglipVisionModel(SiglipVisionConfig(**common))}[family]()
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return _save_tiny_vit(tmp_path_factory.mktemp("vit") / "dinov2", "dinov2", patch=8)


@pytest.fixture(scope="module")
def canvases(tmp_path_factory):
    return str(write_shape_detection(tmp_path_factory.mktemp("canvases"), count=8, seed=0, objects=(1, 5)))


def _records(path):
    return load_box_records(DataSpec(path), log=QUIET)


def _score(model: Detector, path: str) -> dict:
    records, classes, ids = _records(path)
    metrics, _ = run_and_score(lambda images: model.predict(images, threshold=0.0), records, classes, ids,
                               model.config.score_threshold)
    return metrics


@pytest.fixture(scope="module")
def trained(backbone, canvases, tmp_path_factory):
    output = tmp_path_factory.mktemp("detector") / "run"
    summary = train_detector(DetectorTrainSettings(data=canvases, eval_data=canvases, output=str(output),
                                                   backbone=backbone, **OVERFIT), log=QUIET)
    return output, summary


def test_untrained_detector_finds_nothing(backbone, canvases):
    classes = _records(canvases)[1]
    model = Detector.create(classes, backbone=backbone, image_size=(128, 128), neck_channels=64, log=QUIET)
    metrics = _score(model, canvases)
    assert metrics["AP50"] <= 0.05 and metrics["true_boxes"] >= 16


def test_overfits_without_nms_and_keeps_the_backbone(trained, backbone, canvases):
    output, summary = trained
    metrics = _score(Detector.from_pretrained(output), canvases)
    assert metrics["AP50"] >= 0.9, metrics
    assert metrics["duplicate_rate"] <= 0.01 and metrics["detections_above_threshold"] >= metrics["true_boxes"] * 0.9
    assert summary["eval"]["AP50"] == pytest.approx(metrics["AP50"])
    # the one-to-one head itself, without the local-peak decoding: the plain top-k of every position
    plain = _score(Detector.from_pretrained(output, peak_window=0), canvases)
    assert plain["AP50"] >= 0.9 and plain["duplicate_rate"] <= 0.01, plain
    # the frozen backbone is bit-identical to the pretrained one
    from transformers import AutoModel

    original = AutoModel.from_pretrained(backbone).state_dict()
    saved = Detector.from_pretrained(output).backbone.model.state_dict()
    assert set(original) == set(saved) and all(torch.equal(original[k], saved[k]) for k in original)
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"]
    assert (output / "metrics.json").is_file() and any((output / "overlays").glob("*.png"))


def test_lora_trains_adapters_only_and_merges_on_save(backbone, canvases, tmp_path):
    settings = DetectorTrainSettings(data=canvases, output=str(tmp_path / "lora"), backbone=backbone, lora_rank=4,
                                     **{**OVERFIT, "epochs": 3})
    classes = _records(canvases)[1]
    model = Detector.create(classes, backbone=backbone, image_size=(128, 128), neck_channels=64, lora_rank=4, log=QUIET)
    base = {k: v.clone() for k, v in model.backbone.named_parameters() if "lora_" not in k}
    assert model.parameter_counts()["lora"] > 0
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    pixels = torch.rand(2, 3, 128, 128)
    for _ in range(3):
        optimizer.zero_grad()
        out = model.train()(pixels)
        (out["logits"].sigmoid().mean() + out["boxes"].mean()).backward()
        optimizer.step()
    assert all(torch.equal(base[k], v) for k, v in model.backbone.named_parameters() if "lora_" not in k)
    lora_b = [p for n, p in model.backbone.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # the adapters moved
    model.eval()
    expected = model(pixels)["logits"]  # every position's (not the top-k's: rounding can swap near-tied neighbours)
    model.save_pretrained(tmp_path / "merged")
    reloaded = Detector.from_pretrained(tmp_path / "merged")
    assert reloaded.parameter_counts()["lora"] == 0
    assert torch.allclose(reloaded(pixels)["logits"], expected, atol=1e-5)
    summary = train_detector(settings, log=QUIET)  # and the training loop runs with LoRA on
    assert summary["parameters"]["lora"] > 0


@pytest.mark.parametrize("family,patch", [("clip", 16), ("siglip", 16), ("dinov2", 14)])
def test_vit_families_and_non_square_inputs(tmp_path, family, patch):
    folder = _save_tiny_vit(tmp_path / family, family, patch)
    model = Detector.create(["a", "b", "c"], backbone=folder, image_size=(96, 130), neck_channels=32, log=QUIET).eval()
    out = model(torch.rand(2, 3, 96, 130))
    sizes = [(12, 17), (6, 9), (3, 5)]  # ceil(96 / s), ceil(130 / s) for s = 8, 16, 32
    assert out["logits"].shape == (2, sum(h * w for h, w in sizes), 3) and out["boxes"].shape[-1] == 4
    model.save_pretrained(tmp_path / "saved")
    reloaded = Detector.from_pretrained(tmp_path / "saved")
    pixels = torch.rand(1, 3, 96, 130)
    assert torch.equal(model.detect(pixels)[1], reloaded.detect(pixels)[1])
    rows = reloaded.predict([Image.new("RGB", (200, 150))], threshold=0.0)[0]["boxes"]
    # at most top_k: positions that are not local peaks score 0 and are no detections
    assert 0 < len(rows) <= model.config.top_k and all(0 <= b["box"][0] <= b["box"][2] <= 200 for b in rows)
    if family == "clip":  # a non-square export of a second family (the trained fixture's export is DINOv2)
        from visiontune.detector.export import export_detector

        report = export_detector(tmp_path / "saved", tmp_path / "m.onnx", log=QUIET)
        assert report["fp32_vs_torch"]["score_max_abs_diff"] < 1e-4


def test_onnx_equals_pytorch_and_int8_reports_map(trained, canvases, tmp_path):
    output, _ = trained
    assert main(["detector", "export", "--model", str(output), "--output", str(tmp_path / "dt.onnx")]) == 0
    report = json.loads((tmp_path / "dt.report.json").read_text())
    assert report["fp32_vs_torch"]["score_max_abs_diff"] < 1e-4
    assert report["fp32_vs_torch"]["box_max_abs_diff"] < 1e-4 and report["fp32_vs_torch"]["label_agreement"] == 1.0
    assert main(["detector", "export", "--model", str(output), "--output", str(tmp_path / "dt8.onnx"), "--int8",
                 "--eval-data", canvases]) == 0
    table = json.loads((tmp_path / "dt8.report.json").read_text())["mAP"]
    assert table["pytorch"]["AP"] == pytest.approx(table["onnx_fp32"]["AP"], abs=1e-3)
    assert table["onnx_int8"]["AP50"] >= 0.8 and "AP_change_points" in table
    assert (tmp_path / "dt8.onnx").stat().st_size < (tmp_path / "dt8.fp32.onnx").stat().st_size
    # static int8 (calibrated on the data's images) and fp16 run and keep the boxes
    assert main(["detector", "export", "--model", str(output), "--output", str(tmp_path / "st8.onnx"), "--int8",
                 "--calibration-data", canvases, "--eval-data", canvases]) == 0
    static = json.loads((tmp_path / "st8.report.json").read_text())
    assert static["int8_mode"].startswith("static") and static["mAP"]["onnx_int8"]["AP50"] >= 0.8
    assert main(["detector", "export", "--model", str(output), "--output", str(tmp_path / "h.onnx"), "--fp16",
                 "--eval-data", canvases]) == 0
    assert json.loads((tmp_path / "h.report.json").read_text())["mAP"]["onnx_fp16"]["AP50"] >= 0.85

    # the ONNX-only path: torch made unimportable, the same detections as the PyTorch model
    records = _records(canvases)[0]
    path = str(records[0].base_dir / records[0].image) if records[0].base_dir else str(records[0].image)
    script = (f"import sys, json; sys.modules['torch'] = None\n"
              f"from visiontune.detector.runtime import OnnxDetector\n"
              f"print(json.dumps(OnnxDetector({str(tmp_path / 'dt.onnx')!r}).predict([{path!r}])))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    onnx_boxes = json.loads(result.stdout.strip().splitlines()[-1])[0]["boxes"]
    torch_boxes = Detector.from_pretrained(output).predict([path])[0]["boxes"]
    assert [b["label"] for b in onnx_boxes] == [b["label"] for b in torch_boxes] and torch_boxes
    assert np.allclose([b["box"] for b in onnx_boxes], [b["box"] for b in torch_boxes], atol=1e-2)
    # an ONNX graph has its decoding built in: overriding the peak window there is refused, not ignored
    assert main(["detector", "predict", "--model", str(tmp_path / "dt.onnx"), "--images", path,
                 "--peak-window", "0"]) == 2


def test_cli_predict_eval_and_resume(trained, canvases, backbone, tmp_path):
    output, _ = trained
    records = _records(canvases)[0]
    folder = records[0].base_dir or tmp_path
    assert main(["detector", "predict", "--model", str(output), "--images", str(folder), "--output",
                 str(tmp_path / "preds.json"), "--draw", str(tmp_path / "drawn")]) == 0
    rows = json.loads((tmp_path / "preds.json").read_text())
    assert len(rows) >= 8 and all({"image", "width", "height", "boxes"} <= set(r) for r in rows)
    assert len(list((tmp_path / "drawn").glob("*.png"))) == len(rows)
    assert main(["detector", "eval", "--model", str(output), "--data", canvases, "--output", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["AP50"] >= 0.9 and json.loads((tmp_path / "ev" / "detections.json").read_text())
    assert main(["detector", "eval", "--model", str(output), "--data", canvases, "--peak-window", "0",
                 "--output", str(tmp_path / "plain")]) == 0  # the one-to-one head's plain top-k
    assert json.loads((tmp_path / "plain" / "metrics.json").read_text())["AP50"] >= 0.9
    # every position of the top-k is a detection there; with the peaks, neighbours of a peak are not
    detections = {name: len(json.loads((tmp_path / name / "detections.json").read_text())) for name in ("ev", "plain")}
    assert detections["plain"] > detections["ev"], detections

    run = tmp_path / "resumable"
    common = ["detector", "train", "--data", canvases, "--output", str(run), "--backbone", backbone, "--image-size",
              "128", "--neck-channels", "32", "--batch-size", "8", "--workers", "0", "--no-augment"]
    assert main(common + ["--epochs", "1"]) == 0
    assert main(common + ["--epochs", "2", "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    assert main(["detector", "train", "--data", canvases, "--output", str(tmp_path / "none"), "--backbone", backbone,
                 "--resume"]) == 2  # nothing to resume: a clear error, not a traceback


def test_checkpoints_are_written_whole_and_never_run_code(tmp_path, capsys):
    from visiontune.detector.train import load_checkpoint, save_checkpoint

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"epoch": 1, "trained": {"w": torch.ones(2)}, "history": [{"loss": 0.5}]}, path)
    assert load_checkpoint(path)["epoch"] == 1 and not (tmp_path / "checkpoint.pt.partial").exists()
    path.write_bytes(path.read_bytes()[:40])  # cut short, as a kill mid-write without the rename would leave it
    with pytest.raises(ValueError, match="checkpoint.pt: not a readable detector checkpoint"):
        load_checkpoint(path)
    torch.save({"epoch": 1, "hook": print}, path)  # a pickle that names a callable is refused, not run
    with pytest.raises(ValueError, match="not a readable detector checkpoint"):
        load_checkpoint(path)


def test_duplicate_rate_counts_what_nms_would_remove():
    box = lambda label, xyxy, score: {"label": label, "box": xyxy, "score": score}
    predictions = [{"boxes": [box("a", [0, 0, 10, 10], 0.9), box("a", [0, 0, 10, 9.5], 0.8),  # duplicate
                              box("b", [0, 0, 10, 10], 0.7),  # another class: not a duplicate
                              box("a", [20, 20, 30, 30], 0.6), box("a", [0, 0, 10, 10], 0.1)]},  # below threshold
                   {"boxes": []}]
    assert duplicate_rate(predictions, threshold=0.3) == (0.25, 1, 4)


def test_f1_operating_point_by_hand():
    from visiontune.detector.evaluation import f1_operating_point

    box = lambda label, xyxy, score: {"label": label, "box": xyxy, "score": score}
    predictions = [{"boxes": [box("a", [0, 0, 10, 10], 0.9), box("a", [0, 0, 10, 9.5], 0.8),  # hit, duplicate
                              box("a", [20, 20, 30, 30], 0.4), box("b", [50, 50, 60, 60], 0.2)]}]  # hit, miss
    references = [{"boxes": [{"label": "a", "box": [0, 0, 10, 10]}, {"label": "a", "box": [20, 20, 30, 30]},
                             {"label": "b", "box": [0, 0, 5, 5], "crowd": True}]}]  # crowd: not counted
    operating = f1_operating_point(predictions, references)
    # at 0.4: 3 detections, 2 hits of 2 objects -> precision 2/3, recall 1 (at 0.9 only F1 2/3)
    assert operating["f1_threshold"] == 0.4 and operating["f1"] == pytest.approx(0.8)
    assert operating["f1_precision"] == pytest.approx(2 / 3) and operating["f1_recall"] == 1.0
    assert f1_operating_point([{"boxes": []}], references)["f1_threshold"] is None


def test_assignment_takes_a_position_inside_the_box():
    from visiontune.detector.loss import assign

    centres = torch.tensor([[10.0, 10.0], [30.0, 30.0], [90.0, 90.0]])
    logits = torch.zeros(1, 3, 2)
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.31, 0.30, 0.2, 0.2]])}
    boxes = torch.tensor([[[0.31, 0.30, 0.2, 0.2], [0.5, 0.5, 0.1, 0.1], [0.31, 0.30, 0.2, 0.2]]])
    # positions 0 and 2 predict the box exactly but lie outside it; position 1 is inside, so it is the one
    rows, columns = assign(logits, boxes, centres, [target], (100, 100))[0]
    assert rows.tolist() == [1] and columns.tolist() == [0]
    rows, _ = assign(logits, boxes, centres, [{"labels": torch.tensor([], dtype=torch.long),
                                              "boxes": torch.zeros(0, 4)}], (100, 100))[0]
    assert len(rows) == 0


def test_augmentations_keep_boxes_on_their_objects():
    from visiontune.detector.augment import AugmentSettings, augment

    image = Image.new("RGB", (100, 80))
    image.paste((255, 255, 255), (10, 20, 30, 60))
    boxes, labels = np.array([[10, 20, 30, 60]], dtype=np.float32), np.array([0])
    for seed in range(30):
        out, out_boxes, out_labels = augment(image, boxes, labels, AugmentSettings(), np.random.default_rng(seed))
        pixels = np.asarray(out.convert("L")) > 128
        assert len(out_boxes) == len(out_labels)
        for x1, y1, x2, y2 in out_boxes:
            assert 0 <= x1 < x2 <= out.width and 0 <= y1 < y2 <= out.height
            inside = pixels[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))]
            assert inside.mean() > 0.9  # the box still covers the white object
        if not len(out_boxes):
            assert pixels.sum() < 0.5 * 20 * 40 + 1  # dropped only when most of the object was cropped away


@pytest.mark.skipif(shutil.which("torchrun") is None or not torch.distributed.is_available(), reason="needs torchrun")
def test_torchrun_two_processes_equal_one_with_the_same_global_batch(backbone, canvases, tmp_path):
    """8 canvases: one step per epoch either way (8 x 1 process, 4 x 2), the loss normalised by the global
    number of objects, so the weights (EMA included) end the same."""
    from safetensors.torch import load_file

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    common = ["-m", "visiontune", "detector", "train", "--data", canvases, "--backbone", backbone, "--image-size",
              "128", "--neck-channels", "32", "--epochs", "3", "--workers", "0", "--no-augment"]
    one = subprocess.run([sys.executable, *common, "--batch-size", "8", "--output", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([shutil.which("torchrun"), "--standalone", "--nproc_per_node", "2", *common, "--batch-size",
                          "4", "--output", str(tmp_path / "two")], env=env, capture_output=True, text=True, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    single, distributed = (load_file(tmp_path / name / "model.safetensors") for name in ("one", "two"))
    for key in single:
        torch.testing.assert_close(distributed[key], single[key], rtol=0, atol=1e-5)
    assert json.loads((tmp_path / "two" / "train_summary.json").read_text())["processes"] == 2
