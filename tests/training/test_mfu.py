"""Every run reports its FLOPs per token, achieved FLOP/s and MFU against a matmul peak measured in the run."""

from __future__ import annotations

import torch

from visiontune.api.train import train
from visiontune.training.mfu import matmul_peak

QUIET = dict(log=lambda *_: None)


def test_matmul_peak_is_measured_on_this_device():
    peak = matmul_peak("cpu", seconds=0.2)
    assert peak["dtype"] == "float32" and 1e8 < peak["flops_per_second"] < 1e14


def test_summary_reports_flops_and_mfu(tiny_models, shapes, tmp_path):
    summary = train(model=str(tiny_models["smolvlm"]), data=str(shapes["jsonl"]), output=str(tmp_path / "run"),
                    max_steps=2, batch_size=4, num_workers=0, report_to="none", preflight=False, **QUIET)
    from transformers import AutoModelForImageTextToText

    parameters = sum(p.numel() for p in AutoModelForImageTextToText.from_pretrained(
        str(tiny_models["smolvlm"]), dtype=torch.float32).parameters())
    # forward (2 FLOPs per weight per token) + backward through the activations (2 more); a LoRA run computes
    # no gradients for the frozen weights, so well under full training's 6 per weight
    assert 1.0 * parameters < summary["flops_per_token"] < 8 * parameters, (summary["flops_per_token"], parameters)
    achieved = summary["flops_per_token"] * summary["tokens_per_second"]
    assert abs(summary["achieved_flops_per_second"] / achieved - 1) < 0.01
    assert 0 < summary["mfu"] <= 1.0 and summary["matmul_peak_dtype"] == "float32"


def test_counted_flops_match_six_per_weight_per_token_for_a_plain_lm():
    """Full training of a plain LM: forward 2 FLOPs per weight per token, backward 4 (the independent count
    behind every MFU figure); embedding lookups are not matmuls, attention's own FLOPs add a little."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from visiontune.training.mfu import flops_per_token

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False))
    tokens = 16
    batch = {"input_ids": torch.randint(0, 256, (2, tokens)), "attention_mask": torch.ones(2, tokens, dtype=torch.long)}

    def loss(model, batch):
        return model(**batch, labels=batch["input_ids"]).loss, None

    matmul_weights = sum(p.numel() for name, p in model.named_parameters()
                         if p.ndim == 2 and "embed_tokens" not in name)
    layers, width = model.config.num_hidden_layers, model.config.hidden_size
    attention = layers * 2 * 2 * tokens * width * 3  # QK^T and AV, forward + backward, per token (upper bound)
    counted = flops_per_token(model, batch, loss)
    assert 6 * matmul_weights <= counted <= 6 * matmul_weights + attention, (counted, 6 * matmul_weights)


def test_measuring_the_peak_leaves_the_random_state_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    matmul_peak("cpu", seconds=0.05)
    assert torch.equal(torch.rand(4), expected)
