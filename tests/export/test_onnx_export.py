"""ONNX export and the torch-free runtime: equal logits, identical greedy tokens, the same class scores, and a
runtime that works where torch cannot be imported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

QUIET = dict(log=lambda *_: None)
CLASSES = ["circle", "circles", "square", "triangle"]


@pytest.fixture(scope="module", params=["composed", "llava", "smolvlm"])
def exported(request, tiny_models, tmp_path_factory):
    from visiontune.export.onnx_export import export_onnx
    from visiontune.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp(f"onnx-{request.param}")
    model = tiny_models.get(request.param) or build_tiny_model(request.param, root / "model")
    report = export_onnx(str(model), str(root / "export"), quantize=["int8"], **QUIET)
    return model, root / "export", report


def _images():
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(40, 24), (20, 20), (64, 96)]]


def test_export_layout_report_and_logits(exported):
    _, root, report = exported
    names = {p.name for p in (root / "onnx").iterdir()}
    assert {"vision_encoder.onnx", "embed_tokens.onnx", "decoder_model_merged.onnx", "export.json",
            "export_report.json", "decoder_model_merged_int8.onnx"} <= names
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "preprocessor_config.json"} <= {p.name for p in root.iterdir()}
    assert report["variants"]["fp32"]["max_abs_logit_difference"] < 1e-4  # fp32 graphs vs PyTorch
    assert report["pixel_max_abs_difference"] < 1e-5  # numpy preprocessing vs the transformers processor
    assert report["variants"]["int8"]["megabytes"] < report["variants"]["fp32"]["megabytes"]
    assert json.loads((root / "onnx" / "export_report.json").read_text()) == report
    # The code files config.json's auto_map names are there (a composed VLM's configuration/modeling files).
    auto_map = json.loads((root / "config.json").read_text()).get("auto_map", {})
    named = {value.split(".")[0] + ".py" for value in auto_map.values() if isinstance(value, str)}
    assert all((root / name).is_file() for name in named), (named, sorted(p.name for p in root.iterdir()))
    assert ("modeling.py" in named) == (root.parent.name.startswith("onnx-composed"))


def test_greedy_generation_gives_the_same_tokens_as_pytorch(exported):
    """Three images of different sizes, prompts of different lengths (so the batch is left-padded)."""
    from visiontune.inference.predictor import Predictor
    from visiontune.models.vlm import load_for_inference
    from visiontune.runtime import OnnxVLM
    from visiontune.tasks import get_task

    model_path, root, _ = exported
    model, processor, _ = load_for_inference(str(model_path), dtype="float32", **QUIET)
    task = get_task("caption")
    messages = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
                for text in ("Describe.", "What is in this picture, in a few words?", "Colours?")]
    predictor = Predictor(model, processor, task, max_new_tokens=12)
    runtime = OnnxVLM(root)
    # the runtime's own preprocessing (SmolVLM: a different tiling per image size) equals the processor's
    ours, theirs = runtime.encode_prompts(_images(), messages), predictor.collator.encode_prompts(_images(), messages)
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert np.abs(ours["pixel_values"] - theirs["pixel_values"].numpy()).max() < 1e-5
    expected = predictor.generate(_images(), messages, with_scores=True)
    got = runtime.generate(_images(), messages, max_new_tokens=12)
    assert got["tokens"] == expected["tokens"]
    assert got["texts"] == expected["texts"]
    assert np.allclose(np.concatenate(got["log_probs"]), np.concatenate(expected["log_probs"]), atol=1e-3)
    stop = lambda text: len(text) >= 5
    got = runtime.generate(_images(), messages, max_new_tokens=12, stop_when=stop)
    assert got["tokens"] == predictor.generate(_images(), messages, with_scores=True, stop_when=stop)["tokens"]
    assert all(len(tokens) < 12 for tokens in got["tokens"])


def test_score_mode_matches_pytorch(exported, shape_classes):
    from visiontune.api.predict import load_predictor

    model_path, root, _ = exported
    files = sorted(shape_classes.rglob("*.png"))[:5]
    images = [Image.open(f).convert("RGB") for f in files]
    options = dict(task="classify", task_options={"classes": CLASSES}, mode="score", batch_size=3, **QUIET)
    torch_rows = load_predictor(str(model_path), **options).predict(images, progress=False)
    onnx_rows = load_predictor(str(root / "onnx"), **options).predict(images, progress=False)
    for ours, theirs in zip(onnx_rows, torch_rows):
        assert ours["label"] == theirs["label"]
        assert np.allclose([ours["log_likelihoods"][c] for c in CLASSES],
                           [theirs["log_likelihoods"][c] for c in CLASSES], atol=1e-3)


@pytest.mark.parametrize("task,options", [("caption", {}), ("classify", {"classes": CLASSES, "mode": "generate"}),
                                          ("detect", {"classes": ["circle", "square"], "score_threshold": 0.0})])
def test_every_task_predicts_from_an_export_as_from_pytorch(exported, shape_classes, task, options):
    """Tasks reach the model only through the predictor contract, so an export gives PyTorch's rows."""
    from visiontune.api.predict import load_predictor
    from visiontune.inference.protocol import PredictorProtocol

    model_path, root, _ = exported
    images = [Image.open(f).convert("RGB") for f in sorted(shape_classes.rglob("*.png"))[:3]]
    mode = options.pop("mode", None)
    kwargs = dict(task=task, task_options=options, mode=mode, batch_size=2, max_new_tokens=16, **QUIET)
    predictors = [load_predictor(str(model_path), **kwargs), load_predictor(str(root / "onnx"), **kwargs)]
    assert all(isinstance(p, PredictorProtocol) for p in predictors)
    torch_rows, onnx_rows = (p.predict(images, progress=False) for p in predictors)
    for ours, theirs in zip(onnx_rows, torch_rows):
        if task == "detect":
            assert ours["replies"] == theirs["replies"] and ours["queries"] == theirs["queries"] == 2
            assert [b["box"] for b in ours["boxes"]] == [b["box"] for b in theirs["boxes"]]
        else:
            assert ours["text"] == theirs["text"]
            assert (ours.get("label"), ours.get("prediction")) == (theirs.get("label"), theirs.get("prediction"))


def test_token_pieces_join_to_the_reply_and_give_each_token_its_text(exported):
    from visiontune.api.predict import load_predictor

    model_path, root, _ = exported
    for predictor in (load_predictor(str(model_path), **QUIET), load_predictor(str(root / "onnx"), **QUIET)):
        tokenizer = predictor.processor.tokenizer if hasattr(predictor, "processor") else None
        text = "shirt: [12,40,300,999]\nbag: none"
        ids = (tokenizer(text, add_special_tokens=False)["input_ids"] if tokenizer
               else predictor.runtime.encode_text(text, special=False)) + sorted(predictor.end_ids)[:1]
        pieces = predictor.token_pieces(ids)
        assert "".join(pieces) == text and pieces[-1] == "" and len(pieces) == len(ids)
        assert all(piece for piece in pieces[:-1])  # ASCII: every token writes something


_TORCH_BLOCKED = r"""
import json, sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
from visiontune.api.predict import predict
rows = predict(model=sys.argv[1], images=sys.argv[2:], max_new_tokens=8, log=lambda *_: None)
print(json.dumps([row["prediction"] for row in rows]))
assert not any(name.startswith(("torch", "transformers", "peft")) for name in sys.modules if sys.modules[name])
"""


def test_runtime_runs_where_torch_cannot_be_imported(exported, tmp_path):
    from visiontune.api.predict import predict

    model_path, root, _ = exported
    files = []
    for index, image in enumerate(_images()):
        image.save(tmp_path / f"{index}.png")
        files.append(str(tmp_path / f"{index}.png"))
    done = subprocess.run([sys.executable, "-c", _TORCH_BLOCKED, str(root / "onnx"), *files], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = [row["prediction"] for row in predict(model=str(model_path), images=files, max_new_tokens=8, **QUIET)]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == expected


def test_export_refuses_bad_input(tiny_models, tmp_path):
    from transformers import Qwen2VLConfig

    from visiontune.export.onnx_export import export_onnx
    from visiontune.runtime import OnnxVLM

    Qwen2VLConfig().save_pretrained(tmp_path / "qwen")
    with pytest.raises(ValueError, match="supports the composed, idefics3, llava families; this model is 'qwen2-vl'"):
        export_onnx(str(tmp_path / "qwen"), str(tmp_path / "out"), **QUIET)
    with pytest.raises(FileNotFoundError, match="no such model or run folder"):
        export_onnx(str(tmp_path / "missing"), str(tmp_path / "out"), **QUIET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json or adapter_config.json"):
        export_onnx(str(tmp_path / "empty"), str(tmp_path / "out"), **QUIET)
    (tmp_path / "no-weights").mkdir()
    (tmp_path / "no-weights" / "config.json").write_text((tiny_models["llava"] / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="no weights"):
        export_onnx(str(tmp_path / "no-weights"), str(tmp_path / "out"), **QUIET)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot write there"):
        export_onnx(str(tiny_models["llava"]), str(blocker / "out"), **QUIET)
    with pytest.raises(FileNotFoundError, match="no onnx/export.json"):
        OnnxVLM(tmp_path)


def test_composed_onnx_matches_a_trained_classifier_in_eval(tmp_path, shape_classes):
    """A LoRA run is merged before export (checked), and `eval` on the export gives PyTorch's metrics."""
    from visiontune.api.evaluate import evaluate
    from visiontune.api.train import train
    from visiontune.export.onnx_export import export_onnx
    from visiontune.models.tiny import build_tiny_model

    from conftest import OVERFIT

    model = build_tiny_model("composed", tmp_path / "model")
    train(task="classify", model=str(model), data=str(shape_classes), output=str(tmp_path / "run"),
          **{**OVERFIT, "epochs": 6}, **QUIET)
    report = export_onnx(str(tmp_path / "run"), str(tmp_path / "export"), eval_data=str(shape_classes), **QUIET)
    assert report["variants"]["fp32"]["max_abs_logit_difference"] < 1e-4
    assert report["eval"]["onnx-fp32"]["accuracy"] == report["eval"]["pytorch"]["accuracy"]
    direct = evaluate(model=str(tmp_path / "export" / "onnx"), data=str(shape_classes), **QUIET)
    assert direct["accuracy"] == report["eval"]["pytorch"]["accuracy"]


@pytest.mark.slow
def test_composed_zoo_model_keeps_its_fashion_mnist_accuracy_in_onnx(zoo_classify_run, tmp_path):
    """The zoo composed model, classify-trained briefly (the `zoo_classify_run` fixture), exported with int8 and
    q4: on 200 Fashion-MNIST test images the fp32 export's accuracy equals PyTorch's within 0.5 points; the
    quantized variants' change is reported (export_report.json)."""
    from visiontune.export.onnx_export import export_onnx

    report = export_onnx(str(zoo_classify_run), str(tmp_path / "export"), quantize=["int8", "q4"],
                         eval_data="zoo:fashion-mnist", eval_split="test", max_eval_samples=200, **QUIET)
    accuracy = {side: metrics["accuracy"] for side, metrics in report["eval"].items()}
    print("accuracy on 200 test images:", accuracy, "sizes (MB):",
          {variant: row["megabytes"] for variant, row in report["variants"].items()})
    assert report["eval"]["onnx-fp32"]["samples"] == 200
    assert abs(accuracy["onnx-fp32"] - accuracy["pytorch"]) <= 0.005, accuracy
    assert accuracy["pytorch"] >= 0.35, accuracy  # it learned something (chance is 0.10)
    assert report["variants"]["int8"]["megabytes"] < report["variants"]["fp32"]["megabytes"] / 3
