"""GGUF export with llama.cpp's own converter and quantizer, run by llama.cpp: a fine-tuned tiny SmolVLM with the
zoo's real SmolLM2 tokenizer becomes a text GGUF (f16, q8_0, q4) and an idefics3 mmproj GGUF whose tensors are
the merged model's; llama.cpp (llama-cpp-python, its mtmd library) then gives PyTorch's greedy tokens, class
scores and metrics through `predict`, `eval` and `serve`. Composed VLMs and other families are refused with
the reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from visiontune.api.evaluate import evaluate
from visiontune.api.predict import load_predictor, predict
from visiontune.config import EvalConfig
from visiontune.export.gguf_export import export_gguf, weight_difference

from conftest import OVERFIT
from served import Server, data_url

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def smolvlm_lora_run(shapes, tmp_path_factory):
    """A tiny SmolVLM on SmolLM2's real vocabulary (llama.cpp's converter recognises its pre-tokenizer),
    fine-tuned with LoRA until it writes the shape captions with confidence."""
    from visiontune.api.train import train
    from visiontune.models.tiny import build_smolvlm
    from visiontune.zoo.prepare import zoo_model_path

    root = tmp_path_factory.mktemp("gguf")
    base = build_smolvlm(root / "base", tokenizer_folder=zoo_model_path("smollm2-135m-instruct", **QUIET))
    run = root / "run"
    train(model=str(base), data=str(shapes["coco"]), output=str(run), method="lora", learning_rate=3e-3,
          **OVERFIT, **QUIET)
    return base, run


@pytest.fixture(scope="module")
def exported(smolvlm_lora_run, tmp_path_factory) -> Path:
    _, run = smolvlm_lora_run
    root = tmp_path_factory.mktemp("gguf-export") / "shapes-caption"
    export_gguf(str(run), str(root), quantize=["q8_0"], **QUIET)
    return root


@pytest.mark.slow
def test_a_lora_run_exports_to_gguf_with_its_merged_weights(smolvlm_lora_run, tmp_path):
    base, run = smolvlm_lora_run
    report = export_gguf(str(run), str(tmp_path / "gguf"), quantize=["q8_0", "q4_0", "q4_k_m"], **QUIET)
    files = sorted(path.name for path in (tmp_path / "gguf").iterdir())
    assert files == ["Modelfile", "export_report.json", "mmproj-run-f16.gguf", "run-f16.gguf", "run-q4_0.gguf",
                     "run-q4_k_m.gguf", "run-q8_0.gguf", "visiontune.json"]
    f16, q8 = report["text"]["f16"], report["text"]["q8_0"]
    assert f16["general.architecture"] == "llama" and f16["tokenizer.ggml.pre"] == "smollm" and f16["has_chat_template"]
    # the merged fine-tune's weights (f16 / q8_0 rounding), not the base's: its attention carries the LoRA update
    assert f16["weight_max_abs_difference"] < 2e-3 and q8["weight_max_abs_difference"] < 3e-2
    assert weight_difference(tmp_path / "gguf" / "run-f16.gguf", base) > 10 * f16["weight_max_abs_difference"]
    assert q8["megabytes"] < f16["megabytes"]
    for kind in ("q4_0", "q4_k_m"):  # llama.cpp's quantizer: 4-bit blocks (k-quant rows of 64 fall back to q5_0)
        q4 = report["text"][kind]
        assert 3e-3 < q4["weight_max_abs_difference"] < 0.3 and q4["megabytes"] < f16["megabytes"]
    config = json.loads((base / "config.json").read_text())
    projector = report["mmproj"]
    assert projector["clip.projector_type"] == "idefics3" and projector["general.architecture"] == "clip"
    assert projector["clip.vision.projector.scale_factor"] == config["scale_factor"]
    assert projector["clip.vision.image_size"] == config["vision_config"]["image_size"]
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text().splitlines()
    assert modelfile[:2] == ["FROM ./run-q8_0.gguf", "FROM ./mmproj-run-f16.gguf"]
    assert json.loads((tmp_path / "gguf" / "visiontune.json").read_text())["task"] == "caption"


@pytest.mark.slow
def test_a_lora_run_trained_over_a_lora_run_exports_both_updates(smolvlm_lora_run, shapes, tmp_path):
    from visiontune.api.train import train
    from visiontune.export.merge import merge

    base, first = smolvlm_lora_run
    further = tmp_path / "further"
    train(model=str(first), data=str(shapes["coco"]), output=str(further), method="lora", max_steps=2,
          learning_rate=1e-2, batch_size=4, num_workers=0, report_to="none", preflight=False, measure_mfu=False,
          keep_skills=False, **QUIET)
    report = export_gguf(str(further), str(tmp_path / "gguf"), **QUIET)
    f16 = tmp_path / "gguf" / "further-f16.gguf"
    # The file holds the chain merged (base + first LoRA + its own), not the first run alone.
    assert report["text"]["f16"]["weight_max_abs_difference"] < 2e-3
    merge(str(first), str(tmp_path / "first-merged"), verify_reload=False, **QUIET)
    assert weight_difference(f16, tmp_path / "first-merged") > 10 * report["text"]["f16"]["weight_max_abs_difference"]


def test_composed_and_other_families_are_refused_with_the_reason(tiny_models, tmp_path):
    from visiontune.models.tiny import build_tiny_composed

    composed = build_tiny_composed(tmp_path / "composed")
    with pytest.raises(ValueError, match="'composed': a composed VLM.*SwiGLU.*--format onnx"):
        export_gguf(str(composed), str(tmp_path / "out"), **QUIET)
    with pytest.raises(ValueError, match="idefics3 family \\(SmolVLM\\); this model is 'llava'. Ship"):
        export_gguf(str(tiny_models["llava"]), str(tmp_path / "out"), **QUIET)
    with pytest.raises(ValueError, match="q4"):
        export_gguf(str(tiny_models["smolvlm"]), str(tmp_path / "out"), quantize=["q4"], **QUIET)
    assert not (tmp_path / "out").exists()


def _images(shapes) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(Path(shapes["images"]).glob("*.png"))]


@pytest.mark.slow
def test_llama_cpp_writes_pytorchs_greedy_tokens(smolvlm_lora_run, exported, shapes):
    _, run = smolvlm_lora_run
    pytorch = load_predictor(str(run), **QUIET)
    images = _images(shapes)
    messages = [pytorch.task.messages() for _ in images]
    expected = pytorch.generate(images, messages, with_scores=True, max_new_tokens=16)
    for variant in ("f16", "q8_0"):
        llama_cpp = load_predictor(str(exported / f"run-{variant}.gguf"))
        assert type(llama_cpp.runtime).__name__ == "GgufVLM"
        got = llama_cpp.generate(images, messages, with_scores=True, max_new_tokens=16)
        assert got["tokens"] == expected["tokens"], variant
        assert got["texts"] == expected["texts"] and len(set(expected["texts"])) > 4  # not one caption for all
        differences = [abs(a - b) for ours, theirs in zip(got["log_probs"], expected["log_probs"])
                       for a, b in zip(ours, theirs)]
        assert max(differences) < (0.02 if variant == "f16" else 0.1), variant


@pytest.mark.slow
def test_class_scores_from_llama_cpp_equal_pytorchs(shape_classes, tmp_path):
    """Classification ranks the class answers by their log-likelihood after the prompt (the prompt's cache
    reused for every answer): llama.cpp's equal PyTorch's."""
    from visiontune.api.train import train
    from visiontune.models.tiny import build_smolvlm
    from visiontune.zoo.prepare import zoo_model_path

    base = build_smolvlm(tmp_path / "base", tokenizer_folder=zoo_model_path("smollm2-135m-instruct", **QUIET))
    run = tmp_path / "classify"
    train(model=str(base), data=str(shape_classes), task="classify", output=str(run), method="lora",
          learning_rate=3e-3, **OVERFIT, **QUIET)
    export_gguf(str(run), str(tmp_path / "gguf"), **QUIET)
    files = sorted(str(path) for path in Path(shape_classes).rglob("*.png"))
    expected = predict(model=str(run), images=files, **QUIET)
    got = predict(model=str(tmp_path / "gguf"), images=files, **QUIET)
    assert [row["label"] for row in got] == [row["label"] for row in expected]
    assert len({row["label"] for row in got}) == 3
    for ours, theirs in zip(got, expected):
        for name, value in theirs["log_likelihoods"].items():
            assert ours["log_likelihoods"][name] == pytest.approx(value, abs=0.05)


@pytest.mark.slow
def test_predict_eval_and_serve_take_a_gguf_file(smolvlm_lora_run, exported, shapes, tmp_path):
    _, run = smolvlm_lora_run
    files = sorted(str(path) for path in Path(shapes["images"]).glob("*.png"))
    expected = predict(model=str(run), images=files, **QUIET)
    done = subprocess.run([sys.executable, "-m", "visiontune", "predict", "--model", str(exported / "run-q8_0.gguf"),
                           "--images", *files, "--output", str(tmp_path / "predicted.jsonl")], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "predicted.jsonl").read_text().splitlines()]
    assert [row["prediction"] for row in rows] == [row["prediction"] for row in expected]

    metrics = {side: evaluate(EvalConfig(model=model, data=str(shapes["coco"]), output=str(tmp_path / side)),
                              **QUIET) for side, model in (("pytorch", str(run)),
                                                           ("q8_0", str(exported / "run-q8_0.gguf")))}
    assert metrics["pytorch"]["CIDEr"] > 1.0  # the captions were learnt
    assert abs(metrics["q8_0"]["CIDEr"] - metrics["pytorch"]["CIDEr"]) <= 0.01  # within 1 point

    server = Server(exported)
    try:
        health = httpx.get(f"{server.url}/health").json()
        chat = httpx.post(f"{server.url}/v1/chat/completions", timeout=60, json={
            "max_tokens": 16, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(files[0])}},
                {"type": "text", "text": "Describe this image in one sentence."}]}]}).json()
        served = httpx.post(f"{server.url}/v1/predict", timeout=60, files=[
            ("file", (Path(f).name, Path(f).read_bytes(), "image/png")) for f in files[:3]]).json()
    finally:
        server.stop()
    assert health["model"] == "shapes-caption" and health["task"] == "caption"
    assert chat["choices"][0]["message"]["content"] == expected[0]["prediction"]
    assert [row["prediction"] for row in served["results"]] == [row["prediction"] for row in expected[:3]]
