import json

import pytest
import torch
from safetensors.torch import load_file

from visiontune.api.evaluate import evaluate
from visiontune.api.train import train
from visiontune.cli import main
from visiontune.export.merge import merge

QUIET = {"log": lambda *_: None}


def test_merge_equal_logits_and_plain_reload_generates_the_same(trained_run, shapes, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from visiontune.api.predict import predict
    from visiontune.data.images import load_image
    from visiontune.tasks import get_task

    report = merge(str(trained_run), str(tmp_path / "merged"), **QUIET)
    assert report["max_abs_logit_difference"] <= report["tolerance"]
    assert report["reload_max_abs_logit_difference"] <= report["tolerance"]
    # Plain transformers, on the merged folder, generates what visiontune generates with the adapter run.
    files = sorted(shapes["images"].glob("*.png"))
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged").eval()
    prompt = processor.apply_chat_template(get_task("caption").messages(), add_generation_prompt=True)
    batch = processor(text=[prompt] * len(files), images=[[load_image(f)] for f in files], return_tensors="pt",
                      padding=True)
    plain = processor.tokenizer.batch_decode(model.generate(**batch, max_new_tokens=64)[:, batch["input_ids"].shape[1]:],
                                             skip_special_tokens=True)
    adapter_rows = predict(model=str(trained_run), images=[str(f) for f in files], **QUIET)
    assert [" ".join(text.split()) for text in plain] == [row["prediction"] for row in adapter_rows]
    merged_rows = predict(model=str(tmp_path / "merged"), images=[str(f) for f in files], **QUIET)
    assert [r["prediction"] for r in merged_rows] == [r["prediction"] for r in adapter_rows]


def test_eval_generates_and_scores_and_matches_a_predictions_file(trained_run, shapes, tmp_path):
    metrics = evaluate(model=str(trained_run), data=str(shapes["coco"]), output=str(tmp_path / "eval"), **QUIET)
    assert metrics["CIDEr"] > 5 and metrics["BLEU-4"] > 0.9  # it memorised these captions
    for name in ("metrics.json", "predictions.jsonl", "samples.png"):
        assert (tmp_path / "eval" / name).exists()
    rescored = evaluate(predictions=str(tmp_path / "eval" / "predictions.jsonl"), data=str(shapes["coco"]), **QUIET)
    assert rescored["CIDEr"] == pytest.approx(metrics["CIDEr"])


def test_resume_ends_with_the_same_weights(tiny_models, shapes, tmp_path):
    from transformers import TrainerCallback

    settings = dict(model=str(tiny_models["smolvlm"]), data=str(shapes["coco"]), method="lora", learning_rate=3e-3,
                    epochs=6, batch_size=4, save_steps=4, warmup_ratio=0.0, num_workers=0, report_to="none",
                    lora_dropout=0.0, preflight=False, **QUIET)
    train(output=str(tmp_path / "straight"), **settings)

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise KeyboardInterrupt

    import transformers

    original = transformers.Trainer.__init__

    def with_crash(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.add_callback(Crash())

    transformers.Trainer.__init__ = with_crash
    try:
        with pytest.raises(KeyboardInterrupt):
            train(output=str(tmp_path / "resumed"), **settings)
    finally:
        transformers.Trainer.__init__ = original
    assert (tmp_path / "resumed" / "checkpoint-4").exists()
    train(output=str(tmp_path / "resumed"), resume=True, **settings)
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)


def test_training_bad_images_error_or_counted_skip(tiny_models, shapes, tmp_path):
    rows = shapes["jsonl"].read_text().splitlines()
    import shutil

    folder = tmp_path / "copy"  # never touch the shared fixture folder
    shutil.copytree(shapes["jsonl"].parent / "images", folder / "images")
    (folder / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(rows[:4] + [json.dumps({"image": "images/nope.png", "caption": "x"}),
                                          json.dumps({"image": "images/broken.jpg", "caption": "y"})]) + "\n")
    settings = dict(model=str(tiny_models["smolvlm"]), data=str(data), images_dir=str(folder), method="lora",
                    max_steps=1, batch_size=2, num_workers=0, report_to="none", preflight=False)
    with pytest.raises(ValueError, match="bad.jsonl line 5: image .*nope.png does not exist.*--skip-bad-images"):
        train(output=str(tmp_path / "a"), **settings, **QUIET)
    messages = []
    train(output=str(tmp_path / "b"), skip_bad_images=True, log=messages.append, **settings)
    assert any("skipped 2 missing or unreadable images" in m for m in messages)
    skips = [m for m in messages if m.startswith("skipping ")]
    assert len(skips) == 2 and not any("--skip-bad-images" in m for m in skips)  # it is on: no advice to turn it on
    run = json.loads((tmp_path / "b" / "run.json").read_text())
    assert run["data"]["train_skipped_images"] == 2 and run["data"]["train_images"] == 4


def test_cli_yaml_config_with_flag_override(tiny_models, shapes, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {tiny_models['llava']}\ndata: {shapes['jsonl']}\nmethod: full\nmax_steps: 1\n"
                      f"batch_size: 2\nnum_workers: 0\nreport_to: none\nlearning_rate: 1.0e-4\n")
    assert main(["train", "--config", str(config), "--output", str(tmp_path / "cli"), "--max-steps", "2",
                 "--no-preflight"]) == 0
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["preflight"] is None
    recorded = json.loads((tmp_path / "cli" / "run.json").read_text())["config"]
    assert recorded["method"] == "full" and recorded["max_steps"] == 2
    assert main(["predict", "--model", str(tmp_path / "cli"), "--images", str(shapes["images"]),
                 "--output", str(tmp_path / "p.jsonl"), "--max-new-tokens", "4"]) == 0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 8
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), "--model", str(tiny_models["llava"])]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lora_rank: 4\n")
    assert main(["train", "--config", str(bad_yaml)]) == 2


def test_cli_tiny_model(tmp_path):
    from transformers import AutoModelForImageTextToText

    assert main(["tiny-model", "--family", "llava", "--output", str(tmp_path / "t")]) == 0
    assert AutoModelForImageTextToText.from_pretrained(tmp_path / "t").config.model_type == "llava"
    assert main(["tiny-model", "--family", "nope", "--output", str(tmp_path / "u")]) == 2


def test_a_run_over_a_local_base_loads_from_any_folder(tiny_models, shapes, tmp_path, monkeypatch):
    """The base was given relative to where `train` ran; the run loads from elsewhere, after the project moves
    as a whole, and with --base-model when its base is gone (otherwise an error that names the flag)."""
    import shutil

    from visiontune.api.predict import predict

    project = tmp_path / "project"
    shutil.copytree(tiny_models["smolvlm"], project / "models" / "base")
    monkeypatch.chdir(project)
    train(model="models/base", data=str(shapes["coco"]), output="runs/lora", max_steps=1, batch_size=2,
          preflight=False, measure_mfu=False, report_to="none", num_workers=0, **QUIET)
    image = [str(min(shapes["images"].glob("*.png")))]
    monkeypatch.chdir(tmp_path)
    expected = predict(model="project/runs/lora", images=image, max_new_tokens=4, **QUIET)
    moved = tmp_path / "moved"
    project.rename(moved)  # the absolute path recorded is gone; the run-relative one still holds
    assert predict(model=str(moved / "runs" / "lora"), images=image, max_new_tokens=4, **QUIET) == expected
    (moved / "models" / "base").rename(tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="--base-model"):
        predict(model=str(moved / "runs" / "lora"), images=image, max_new_tokens=4, **QUIET)
    rows = predict(model=str(moved / "runs" / "lora"), base_model=str(tmp_path / "elsewhere"), images=image,
                   max_new_tokens=4, **QUIET)
    assert rows == expected


def test_a_lora_run_fine_tuned_further_starts_from_what_it_learnt(trained_run, shapes, tmp_path):
    from visiontune.api.predict import predict

    # One step at a negligible rate: the second run's own LoRA barely moves, so it captions as the first did.
    train(model=str(trained_run), data=str(shapes["coco"]), output=str(tmp_path / "further"), method="lora",
          max_steps=1, learning_rate=1e-9, batch_size=2, num_workers=0, report_to="none", preflight=False,
          measure_mfu=False, **QUIET)
    files = [str(f) for f in sorted(shapes["images"].glob("*.png"))]
    first = [row["prediction"] for row in predict(model=str(trained_run), images=files, **QUIET)]
    further = [row["prediction"] for row in predict(model=str(tmp_path / "further"), images=files, **QUIET)]
    assert further == first
    captions = {row["caption"] for row in json.loads(shapes["coco"].read_text())["annotations"]}
    assert len(set(first) & captions) >= 6  # the first run had learnt them
