"""Classification on a composed VLM starts its summary token from a linear probe; the projector trains beside
LoRA by default and may take its own learning rate."""

from __future__ import annotations

import torch
from transformers import TrainingArguments

from visiontune.data.loading import DataSpec, load_labelled_records
from visiontune.models.tiny import build_tiny_model
from visiontune.models.vlm import TrainableSetup, load_processor, prepare_for_training
from visiontune.tasks.classify import ClassifyTask
from visiontune.tasks.detect import DetectTask
from visiontune.training.probe_start import class_name_embeddings, start_summary_from_probe
from visiontune.training.vlm_trainer import VLMTrainer

QUIET = dict(log=lambda *_: None)


def _colour_records(tmp_path):
    from visiontune.data.builtin.shapes import write_shape_classes

    folder = write_shape_classes(tmp_path / "data", per_class=12, seed=1, size=32, label_by="colour")
    return load_labelled_records(DataSpec(str(folder)), log=lambda *_: None)


def test_summary_token_names_the_probes_class(tmp_path):
    model_path = build_tiny_model("composed", tmp_path / "model")
    records, classes = _colour_records(tmp_path)
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    # LoRA on a composed VLM trains its projector too (it is saved with the adapter), so the start is kept.
    assert any(p.requires_grad for n, p in model.named_parameters() if "projector" in n)
    processor = load_processor(model_path, **QUIET)
    messages = []
    targets = ClassifyTask(classes).probe_targets(records)
    done = start_summary_from_probe(model, processor, classes, records, targets, batch_size=8, log=messages.append)
    assert done["images"] == len(records) and done["probe_train_accuracy"] >= 0.9, done
    assert "probe start" in messages[0]
    base = model.get_base_model()
    embeddings = class_name_embeddings(base, processor.tokenizer, classes)
    pixels = processor.image_processor([r.load_image() for r in records], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        summary = base.get_image_features(pixels)[:, 0]  # the summary token comes first
    # The token points at the class name embedding of the probe's pick (nearly always the true class here).
    named = (summary @ embeddings.T).argmax(-1)
    truth = torch.tensor([classes.index(r.label) for r in records])
    assert (named == truth).float().mean() >= 0.9


def test_probe_start_is_skipped_when_the_projector_does_not_train(tmp_path):
    model_path = build_tiny_model("composed", tmp_path / "model")
    records, classes = _colour_records(tmp_path)
    model = prepare_for_training(model_path, TrainableSetup(train="language"), torch.float32, **QUIET)
    messages = []
    assert start_summary_from_probe(model, load_processor(model_path, **QUIET), classes, records,
                                    ClassifyTask(classes).probe_targets(records),
                                    log=messages.append) is None
    assert "connector" in messages[0]


def test_connector_learning_rate_is_its_own_parameter_group(tmp_path):
    model_path = build_tiny_model("composed", tmp_path / "model")
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    arguments = TrainingArguments(output_dir=str(tmp_path / "run"), learning_rate=1e-4, use_cpu=True, report_to=[])
    trainer = VLMTrainer(model=model, args=arguments, role_learning_rates={"connector": 3e-3})
    optimizer = trainer.create_optimizer()
    by_rate = {}
    for group in optimizer.param_groups:
        by_rate[group["lr"]] = by_rate.get(group["lr"], 0) + sum(p.numel() for p in group["params"])
    projector = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and "projector" in n)
    assert by_rate[3e-3] == projector > 0
    assert by_rate[1e-4] == sum(p.numel() for p in model.parameters() if p.requires_grad) - projector


def test_detection_summary_token_spends_presence_logits_on_class_names(tmp_path):
    """Detection: one present/absent probe per class; the summary map's output, read back in the class names'
    embeddings, says which classes are in each training image."""
    from visiontune.data.builtin.shapes import write_shape_detection
    from visiontune.data.loading import load_box_records
    from visiontune.training.probe_start import _summary_maps

    model_path = build_tiny_model("composed", tmp_path / "model")
    instances = write_shape_detection(tmp_path / "canvases", count=40, seed=2, size=48, objects=(0, 2),
                                      colour_by_class=True)
    records, classes, _ = load_box_records(DataSpec(str(instances)), log=lambda *_: None)
    model = prepare_for_training(model_path, TrainableSetup(), torch.float32, **QUIET)
    processor = load_processor(model_path, **QUIET)
    targets = DetectTask(classes).probe_targets(records)
    done = start_summary_from_probe(model, processor, classes, records, targets, batch_size=8, **QUIET)
    assert done["probe_train_accuracy"] >= 0.9, done
    base = model.get_base_model()
    pixels = processor.image_processor([r.load_image() for r in records], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        _, features = base.encode_images(pixels)
        token = _summary_maps(model)[0](features)
    embeddings = class_name_embeddings(base, processor.tokenizer, classes)  # (classes, width)
    logits = torch.linalg.lstsq(embeddings.T, token.T).solution.T  # (images, classes)
    present = torch.tensor([[any(b.label == name for b in r.boxes) for name in classes] for r in records])
    assert ((logits > 0) == present).float().mean() >= 0.9


def test_the_probe_start_costs_training_no_extra_vision_forwards(tmp_path, monkeypatch):
    """The probe's encoder pass goes through the run's feature cache, so training reads those features instead
    of encoding every image again: the run encodes as many images with the probe start as without it."""
    from visiontune.api.train import train
    from visiontune.models.compose.modeling import ComposedVLMForConditionalGeneration

    model_path = build_tiny_model("composed", tmp_path / "model")
    from visiontune.data.builtin.shapes import write_shape_classes

    data = write_shape_classes(tmp_path / "data", per_class=6, seed=1, size=32, label_by="colour")
    encoded = []
    original = ComposedVLMForConditionalGeneration.encode_images

    def counted(self, pixel_values):
        encoded.append(int(pixel_values.shape[0]))
        return original(self, pixel_values)

    monkeypatch.setattr(ComposedVLMForConditionalGeneration, "encode_images", counted)
    counts = {}
    for probe in (True, False):
        encoded.clear()
        summary = train(task="classify", model=str(model_path), data=str(data), output=str(tmp_path / f"run-{probe}"),
                        epochs=2, batch_size=4, probe_start=probe, keep_skills=False, num_workers=0,
                        report_to="none", **QUIET)
        assert (summary["probe_start"] is not None) == probe
        counts[probe] = sum(encoded)
    assert counts[True] == counts[False], counts
