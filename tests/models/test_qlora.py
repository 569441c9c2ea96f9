"""QLoRA for real, on the CPU (bitsandbytes 0.49+ quantizes nf4 there): the LM's linear layers load in 4 bits and
the rest stays in full precision, the loss falls, the adapter reloads, merge writes a plain model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import OVERFIT

from visiontune.api.train import train
from visiontune.models.vlm import TrainableSetup, prepare_for_training

QUIET = dict(log=lambda *_: None)


@pytest.mark.parametrize("family", ["smolvlm", "composed"])
def test_qlora_quantizes_only_the_language_models_linear_layers(tmp_path, family):
    import bitsandbytes as bnb

    from visiontune.models.roles import module_roles
    from visiontune.models.tiny import build_tiny_model

    path = build_tiny_model(family, tmp_path / family)
    model = prepare_for_training(path, TrainableSetup(method="qlora"), torch.float32, **QUIET)
    base = model.get_base_model()
    roles = module_roles(base)
    quantized = {roles.role_of(name) for name, module in base.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    assert quantized == {"language"}
    layer = next(m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit))
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested  # double quantization
    assert layer.compute_dtype == torch.float32  # the CPU's matmuls
    four_bit = [m for m in base.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert not any(p.requires_grad for m in four_bit for p in m.parameters())  # frozen 4-bit weights
    assert any(p.requires_grad for name, p in model.named_parameters() if "lora_A" in name)  # LoRA beside them


def test_a_qlora_run_learns_reloads_and_merges_into_a_plain_model(tiny_models, shapes, tmp_path):
    from transformers import AutoModelForImageTextToText

    from visiontune.api.predict import predict
    from visiontune.export.merge import merge

    run = tmp_path / "qlora"
    train(model=str(tiny_models["smolvlm"]), data=str(shapes["coco"]), output=str(run), method="qlora",
          learning_rate=3e-3, **{**OVERFIT, "epochs": 15, "logging_steps": 1}, **QUIET)
    losses = [entry["loss"] for entry in json.loads((run / "checkpoint-15" / "trainer_state.json").read_text())
              ["log_history"] if "loss" in entry]
    assert losses[-1] < 0.5 * losses[0], losses
    assert json.loads((run / "visiontune.json").read_text())["method"] == "qlora"
    answers = predict(model=str(run), images=[str(p) for p in sorted(shapes["coco"].parent.glob("images/*"))[:2]],
                      **QUIET)
    assert len(answers) == 2 and all(isinstance(a["text"], str) for a in answers)
    merged = tmp_path / "merged"
    report = merge(str(run), str(merged), **QUIET)
    assert report["max_abs_logit_difference"] < 1e-3
    plain = AutoModelForImageTextToText.from_pretrained(str(merged))
    assert not any("Linear4bit" in type(m).__name__ for m in plain.modules())
    assert getattr(plain.config, "quantization_config", None) is None
