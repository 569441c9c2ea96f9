"""`visiontune export --format onnx`: a model or run folder as three ONNX graphs + tokenizer, chat template and
configs, checked against PyTorch, optionally quantized, with a report.

Layout (what transformers.js and `visiontune.runtime` read): OUTPUT/{config.json, generation_config.json,
tokenizer.json, tokenizer_config.json, chat_template.jinja, processor_config.json, preprocessor_config.json,
visiontune.json} and OUTPUT/onnx/{vision_encoder,embed_tokens,decoder_model_merged}[_int8|_q4|_fp16].onnx with
onnx/export.json (what the torch-free runtime needs to build prompts) and export_report.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..models.families import Family
from ..models.vlm import end_token_ids, is_adapter_folder, load_for_inference
from ..runtime.vlm import EXPORT_FILE, GRAPHS, VARIANT_SUFFIXES, OnnxVLM
from ..tasks import task_from_metadata
from .compare import compare_metrics
from .merge import merge_checked, note_merged_tasks, sample_batch, sample_images
from .onnx_graphs import export_graphs, exportable_family, text_shape

QUANTIZATIONS = ("int8", "q4", "fp16")

TOLERANCE = 1e-3  # max |logit difference| of the fp32 graphs against PyTorch on the sample batch


def _quantize(source: Path, target: Path, kind: str) -> None:
    import onnx

    if kind == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    elif kind == "q4":
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), block_size=32, is_symmetric=True)
        quantizer.process()
        onnx.save(quantizer.model.model, str(target))
    elif kind == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # inputs and outputs (pixels, embeddings, the cache) stay fp32, so every variant is fed the same way
        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))
    else:
        raise ValueError(f"--quantize {kind!r}: choose from {', '.join(QUANTIZATIONS)}")


def _export_info(model, processor, family: Family, batch: dict) -> dict:
    tokenizer = processor.tokenizer
    image_token = getattr(processor, "image_token", "<image>")
    image_token_id = tokenizer.convert_tokens_to_ids(image_token)
    images = batch["pixel_values"].shape[0]
    layers, heads, head_dim = text_shape(model)
    return {"family": family.name, "image_token": image_token, "image_token_id": image_token_id,
            "tokens_per_image": int((batch["input_ids"] == image_token_id).sum()) // images,
            "image_preparation": family.runtime_images, "flatten_image_parts": family.flatten_image_parts,
            "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            "end_token_ids": sorted(end_token_ids(model, tokenizer)),
            "template_tokens": {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "pad_token")
                                if getattr(tokenizer, name, None) is not None},
            "layers": layers, "kv_heads": heads, "head_dim": head_dim,
            "image_processor": processor.image_processor.to_dict(), "variants": ["fp32"],
            **family.hook("onnx_vision").export_info(processor, image_token)}


def _load_merged(path: str, log) -> tuple:
    """The model in fp32 with any LoRA adapter folded in (checked as `merge` checks it), its processor, metadata,
    task, the sample batch and the model's last-position logits on it."""
    model, processor, metadata = load_for_inference(path, dtype="float32", merge_adapter=False, log=log)
    task = task_from_metadata(metadata)
    batch = sample_batch(processor, task)
    if is_adapter_folder(path):
        note_merged_tasks(metadata, log)
        model, logits, _ = merge_checked(model, batch, TOLERANCE, log)
    else:
        with torch.inference_mode():
            logits = model.eval()(**batch).logits
    return model.eval(), processor, metadata, task, batch, logits[:, -1].float().numpy()


def _logit_difference(runtime: OnnxVLM, batch: dict, expected) -> float:
    """Largest |difference| of the last position's logits from PyTorch's, the ONNX graphs fed the processor's
    own tensors."""
    arrays = {k: v.numpy() if k != "pixel_attention_mask" else v.bool().numpy() for k, v in batch.items()
              if torch.is_tensor(v)}
    logits, _, _ = runtime.prompt_pass(arrays)
    return float(abs(logits - expected).max())


def _check_exportable(model: str) -> None:
    """Refuse early, naming the problem: a missing folder, one without a model, a family without graphs."""
    from ..models.vlm import base_model_of

    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"{model}: no such model or run folder")
    if not ((path / "config.json").is_file() or is_adapter_folder(path)):
        raise FileNotFoundError(f"{model}: no config.json or adapter_config.json; pass a model folder or a "
                                f"visiontune run folder")
    base = Path(base_model_of(path))
    exportable_family(json.loads((base / "config.json").read_text()).get("model_type", ""), model)
    if not (any(base.glob("*.safetensors")) or any(base.glob("*.bin"))):
        raise FileNotFoundError(f"{model}: no weights (*.safetensors) in {base}")


def export_onnx(model: str, output: str, quantize: list[str] | None = None, eval_data: str | None = None,
                eval_split: str | None = None, max_eval_samples: int = 200, log=print) -> dict:
    _check_exportable(model)
    unknown = [kind for kind in quantize or [] if kind not in QUANTIZATIONS]
    if unknown:
        raise ValueError(f"--quantize {' '.join(unknown)}: an ONNX export writes {', '.join(QUANTIZATIONS)} (q8_0 "
                         f"and the k-quants are GGUF types: --format gguf)")
    root = Path(output)
    try:
        (root / "onnx").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--output {output}: cannot write there ({error.strerror})") from error
    torch_model, processor, metadata, task, batch, expected = _load_merged(model, log)
    family = exportable_family(torch_model.config.model_type, model)
    log(f"exporting a {family.name} model to {root / 'onnx'}")
    export_graphs(torch_model, family, batch["pixel_values"], root / "onnx")
    processor.save_pretrained(root)
    if getattr(torch_model, "_auto_class", None) is not None:
        # A composed VLM: the code files its config.json's auto_map names go with it, as save_pretrained does.
        from transformers.dynamic_module_utils import custom_object_save

        custom_object_save(torch_model, root, config=torch_model.config)
    torch_model.config.save_pretrained(root)
    torch_model.generation_config.save_pretrained(root)
    # transformers.js reads the image processor here, and `processor_class` picks its processor
    (root / "preprocessor_config.json").write_text(json.dumps(
        {**processor.image_processor.to_dict(), "processor_class": type(processor).__name__}, indent=2))
    (root / "visiontune.json").write_text(json.dumps({**metadata, "exported_from": model}, indent=2))
    _template_in_tokenizer_config(root)
    info = _export_info(torch_model, processor, family, batch)
    for kind in quantize or []:
        for name in GRAPHS:
            _quantize(root / "onnx" / f"{name}.onnx", root / "onnx" / f"{name}{VARIANT_SUFFIXES[kind]}.onnx", kind)
        info["variants"].append(kind)
        log(f"wrote the {kind} variant")
    (root / "onnx" / EXPORT_FILE).write_text(json.dumps(info, indent=2))

    # the torch-free runtime's own preprocessing, against the processor's
    ours = OnnxVLM(root).encode_prompts(sample_images(), [task.messages()] * 2)
    if ours["input_ids"].shape != tuple(batch["input_ids"].shape) or (ours["input_ids"] != batch["input_ids"].numpy()).any():
        raise RuntimeError("the runtime's prompt tokens differ from the processor's; this model's chat template or "
                           "tokenizer is not supported by the torch-free runtime")
    pixel_difference = float(abs(ours["pixel_values"] - batch["pixel_values"].numpy()).max())
    report = {"model": model, "output": str(root), "family": family.name, "pixel_max_abs_difference": pixel_difference,
              "variants": {}}
    for variant in info["variants"]:
        runtime = OnnxVLM(root, variant)
        files = {name: (root / "onnx" / f"{name}{VARIANT_SUFFIXES[variant]}.onnx") for name in GRAPHS}
        report["variants"][variant] = {
            "max_abs_logit_difference": _logit_difference(runtime, batch, expected),
            "megabytes": round(sum(f.stat().st_size + _external_size(f) for f in files.values()) / 2**20, 2)}
        log(f"{variant}: max |logit difference| vs PyTorch {report['variants'][variant]['max_abs_logit_difference']:.2e}"
            f", {report['variants'][variant]['megabytes']} MB")
    fp32 = report["variants"]["fp32"]["max_abs_logit_difference"]
    if fp32 > TOLERANCE:
        raise RuntimeError(f"{root}: the fp32 ONNX graphs differ from PyTorch by {fp32:.3e} > {TOLERANCE}")
    if eval_data:
        sides = {"pytorch": (model, "auto"), **{f"onnx-{v}": (str(root / "onnx"), v) for v in info["variants"]}}
        report["eval"] = compare_metrics(sides, eval_data, eval_split, max_eval_samples, log)
    (root / "onnx" / "export_report.json").write_text(json.dumps(report, indent=2))
    log(f"export report: {root / 'onnx' / 'export_report.json'}")
    return report


def _template_in_tokenizer_config(root: Path) -> None:
    """transformers.js reads the chat template from tokenizer_config.json, not chat_template.jinja."""
    template, config = root / "chat_template.jinja", root / "tokenizer_config.json"
    if template.is_file() and config.is_file():
        settings = json.loads(config.read_text())
        settings.setdefault("chat_template", template.read_text())
        config.write_text(json.dumps(settings, indent=2, ensure_ascii=False))


def _external_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return data.stat().st_size if data.exists() else 0
