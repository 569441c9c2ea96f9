"""GGUF export with llama.cpp's own converter: a fine-tuned tiny SmolVLM with the zoo's real SmolLM2 tokenizer
becomes a text GGUF (f16, q8_0) and an idefics3 mmproj GGUF whose tensors are the merged model's; composed
VLMs and other families are refused with the reason."""

from __future__ import annotations

import json

import pytest

from visiontune.export.gguf_export import weight_difference, export_gguf

from conftest import OVERFIT

QUIET = {"log": lambda *_: None}


@pytest.fixture(scope="module")
def smolvlm_lora_run(shapes, tmp_path_factory):
    """A tiny SmolVLM on SmolLM2's real vocabulary (llama.cpp's converter recognises its pre-tokenizer),
    fine-tuned with LoRA on the shape captions."""
    from visiontune.api.train import train
    from visiontune.models.tiny import build_smolvlm
    from visiontune.zoo.prepare import zoo_model_path

    root = tmp_path_factory.mktemp("gguf")
    base = build_smolvlm(root / "base", tokenizer_folder=zoo_model_path("smollm2-135m-instruct", **QUIET))
    run = root / "run"
    train(model=str(base), data=str(shapes["coco"]), output=str(run), method="lora", learning_rate=3e-3,
          **{**OVERFIT, "epochs": 4}, **QUIET)
    return base, run


@pytest.mark.slow
def test_a_lora_run_exports_to_gguf_with_its_merged_weights(smolvlm_lora_run, tmp_path):
    base, run = smolvlm_lora_run
    report = export_gguf(str(run), str(tmp_path / "gguf"), quantize=["q8_0"], **QUIET)
    files = sorted(path.name for path in (tmp_path / "gguf").iterdir())
    assert files == ["Modelfile", "export_report.json", "mmproj-run-f16.gguf", "run-f16.gguf", "run-q8_0.gguf",
                     "visiontune.json"]
    f16, q8 = report["text"]["f16"], report["text"]["q8_0"]
    assert f16["general.architecture"] == "llama" and f16["tokenizer.ggml.pre"] == "smollm" and f16["has_chat_template"]
    # the merged fine-tune's weights (f16 / q8_0 rounding), not the base's: its attention carries the LoRA update
    assert f16["weight_max_abs_difference"] < 2e-3 and q8["weight_max_abs_difference"] < 3e-2
    assert weight_difference(tmp_path / "gguf" / "run-f16.gguf", base) > 10 * f16["weight_max_abs_difference"]
    assert q8["megabytes"] < f16["megabytes"]
    config = json.loads((base / "config.json").read_text())
    projector = report["mmproj"]
    assert projector["clip.projector_type"] == "idefics3" and projector["general.architecture"] == "clip"
    assert projector["clip.vision.projector.scale_factor"] == config["scale_factor"]
    assert projector["clip.vision.image_size"] == config["vision_config"]["image_size"]
    modelfile = (tmp_path / "gguf" / "Modelfile").read_text().splitlines()
    assert modelfile[:2] == ["FROM ./run-q8_0.gguf", "FROM ./mmproj-run-f16.gguf"]
    assert json.loads((tmp_path / "gguf" / "visiontune.json").read_text())["task"] == "caption"


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
