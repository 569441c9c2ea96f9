"""Loading image-text-to-text models and preparing them for LoRA / QLoRA / full fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .families import family_for
from .roles import ROLES, module_roles
from .run_base import MODEL_CONFIG_KEY, is_adapter_folder, read_run_metadata, resolve_base

METHODS = ("lora", "qlora", "full")


def resolve_dtype(dtype: str = "auto") -> torch.dtype:
    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16,
             "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, bf16, fp16 or fp32")
    return table[dtype]


def load_processor(path: str | Path, image_size: int | None = None, image_splitting: bool | None = None,
                   log=print, base_model: str | None = None):
    """`base_model`: a LoRA run's base, instead of the one it records (its config names the family)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(path))
    model_type = model_type_of(path, base_model)
    family = family_for(model_type)
    if family is not None:
        notes = family.configure_processor(processor, image_size, image_splitting)
        if notes:
            log(f"processor ({family.name}): " + "; ".join(notes))
    elif image_size is not None or image_splitting is not None:
        log(f"--image-size / --no-image-splitting are not mapped for model type {model_type!r}; processor unchanged")
    return processor


def base_model_of(path: str | Path, override: str | None = None) -> str:
    """The model a run folder's LoRA adapter applies to (`override`: `--base-model`); the path itself for a
    plain model."""
    if Path(path).is_dir() and is_adapter_folder(path):
        return resolve_base(path, override)
    return str(path)


def root_model_of(path: str | Path, override: str | None = None) -> str:
    """The plain model under a run folder: its base, or its base's base for a LoRA run trained over another
    LoRA run (`override`: `--base-model`, for the first level)."""
    root = base_model_of(path, override)
    while Path(root).is_dir() and is_adapter_folder(root):
        root = base_model_of(root)
    return root


def model_type_of(path: str | Path, base_model: str | None = None) -> str:
    from transformers import AutoConfig

    return getattr(AutoConfig.from_pretrained(root_model_of(path, base_model)), "model_type", "")


def load_base_model(path: str | Path, dtype: torch.dtype, quantization_config=None, attention: str = "sdpa",
                    config_overrides: dict | None = None):
    """`config_overrides`: config attributes a run changed on its base (region slots), set before the model
    is built. A LoRA run folder loads as its base with the adapter merged in: a new fine-tune starts from what
    that run learnt (and trains a LoRA of its own over it)."""
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as transformers_logging

    if Path(path).is_dir() and is_adapter_folder(path):
        from peft import PeftModel

        recorded = read_run_metadata(path).get(MODEL_CONFIG_KEY) or {}
        base = load_base_model(base_model_of(path), dtype, quantization_config, attention,
                               {**recorded, **(config_overrides or {})})
        return PeftModel.from_pretrained(base, str(path)).merge_and_unload()

    kwargs = {"dtype": dtype, "attn_implementation": attention, **(config_overrides or {})}
    if quantization_config is not None:
        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
        kwargs.update(quantization_config=quantization_config, device_map={"": device})
    verbosity = transformers_logging.get_verbosity()
    if config_overrides:  # the parts the overrides add are "missing" from the checkpoint until fitted or loaded
        transformers_logging.set_verbosity_error()
    try:
        return AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
    except ValueError as error:
        if "attn_implementation" in str(error) or "sdpa" in str(error).lower():
            kwargs.pop("attn_implementation")  # families without SDPA fall back to their default
            return AutoModelForImageTextToText.from_pretrained(str(path), **kwargs)
        raise
    finally:
        transformers_logging.set_verbosity(verbosity)


@dataclass
class TrainableSetup:
    method: str = "lora"
    train: str | None = None  # "+"-joined roles to train: vision, connector, language; "all"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    gradient_checkpointing: bool = False
    notes: list[str] = field(default_factory=list)

    def trained_roles(self, family=None) -> tuple[str, ...]:
        """The roles to train; `family` (families.Family) may set what LoRA trains when --train is not given."""
        if self.train in (None, ""):
            if self.method in ("lora", "qlora"):
                return (family.lora_default_train if family and family.lora_default_train else ("language",))
            return ("connector", "language")
        if self.train == "all":
            return ROLES
        parts = tuple(part.strip() for part in self.train.replace(",", "+").split("+") if part.strip())
        aliases = {"projector": "connector", "lm": "language", "llm": "language", "text": "language"}
        parts = tuple(aliases.get(p, p) for p in parts)
        unknown = [p for p in parts if p not in ROLES]
        if unknown:
            raise ValueError(f"--train {self.train!r}: unknown part(s) {unknown}; use '+'-joined vision, connector "
                             f"(projector), language (lm), or all")
        return parts


def _qlora_config(skip_modules: list[str]):
    """nf4 with double quantization for the LM's linear layers. Matmuls run in bf16 on a GPU that has it (fp16
    on older ones) and in fp32 on the CPU, where bitsandbytes (0.49+) dequantizes for plain matmuls."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise RuntimeError("--method qlora needs bitsandbytes: pip install 'visiontune[qlora]'") from error
    from transformers import BitsAndBytesConfig

    if torch.cuda.is_available():
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        compute = torch.float32
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, llm_int8_skip_modules=skip_modules)


def _language_linear_names(model, roles) -> list[str]:
    output_head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not output_head and roles.role_of(name) == "language"]


def prepare_for_training(model_path: str | Path, setup: TrainableSetup, dtype: torch.dtype, log=print,
                         config_overrides: dict | None = None):
    """Load the model (with `config_overrides` set on its config) and make exactly the asked parts trainable;
    returns the (possibly PEFT) model."""
    if setup.method not in METHODS:
        raise ValueError(f"unknown --method {setup.method!r}; choose one of {', '.join(METHODS)}")
    trained = setup.trained_roles(family_for(model_type_of(model_path)))
    quantization = None
    if setup.method == "qlora":
        # Keep the vision tower, connector and output head in full precision; 4-bit only the LM's layers.
        probe = module_roles(_meta_model(model_path))
        quantization = _qlora_config(list(probe.paths["vision"] + probe.paths["connector"]) + ["lm_head"])
    model = load_base_model(model_path, dtype, quantization, config_overrides=config_overrides)
    roles = module_roles(model)
    # LoRA applies to the language model; without it (--train projector) the chosen parts train in full
    # and the run saves a whole model, as --method full does.
    uses_lora = setup.method in ("lora", "qlora") and "language" in trained
    if setup.method in ("lora", "qlora") and not uses_lora:
        log(f"--train {setup.train}: no language model part, so no LoRA; {'+'.join(trained)} train in full")
    for name, parameter in model.named_parameters():
        parameter.requires_grad = not uses_lora and roles.role_of(name) in trained
    if uses_lora:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        if setup.method == "qlora":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=setup.gradient_checkpointing)
        fully_trained = [path for role in trained if role != "language" for path in roles.paths[role]]
        targets = _language_linear_names(model, roles) if "language" in trained else []
        if not targets and not fully_trained:
            raise ValueError("nothing to train: LoRA found no linear layers in the language model")
        config = LoraConfig(r=setup.lora_r, lora_alpha=setup.lora_alpha, lora_dropout=setup.lora_dropout,
                            target_modules=targets or None, modules_to_save=fully_trained or None,
                            task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    if setup.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    log(describe_trainable(model))
    return model


def _meta_model(model_path):
    """Instantiate the architecture on the meta device (no memory) just to read its module layout."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText

    with init_empty_weights():
        return AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(str(model_path)))


def _unwrapped_name(name: str) -> str:
    """A parameter's name in the plain model, without PEFT's wrapper prefixes."""
    return name.replace("base_model.model.", "", 1).replace(".modules_to_save.default", "")


def trained_parameters_by_role(model) -> dict[str, list]:
    """Trainable parameters grouped by role (LoRA weights count as their layer's role)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    roles = module_roles(base)
    groups: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(roles.role_of(_unwrapped_name(name)) or "other", []).append(parameter)
    return groups


def describe_trainable(model) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    roles = module_roles(base)
    total: dict[str, int] = {}
    trainable: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        if ".original_module." in name:
            continue  # PEFT keeps a frozen copy of each fully trained module; count the trained copy once
        role = roles.role_of(_unwrapped_name(name)) or "other"
        count = parameter.numel()
        if ".lora_" not in name:
            total[role] = total.get(role, 0) + count
        if parameter.requires_grad:
            trainable[role] = trainable.get(role, 0) + count
    all_total, all_trainable = sum(total.values()), sum(trainable.values())
    parts = ", ".join(f"{role} {trainable.get(role, 0):,}/{total.get(role, 0):,}" for role in total)
    return (f"trainable parameters: {all_trainable:,} of {all_total:,} ({100 * all_trainable / max(all_total, 1):.2f}%)"
            f" — by role: {parts}")


def end_token_ids(model, tokenizer=None) -> set[int]:
    """Token ids that end a reply: the generation config's eos id(s), plus the tokenizer's eos token."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    found = {int(i) for i in ids if i is not None}
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        found.add(int(tokenizer.eos_token_id))
    return found


def load_for_inference(path: str | Path, dtype: str = "auto", merge_adapter: bool = True, log=print,
                       base_model: str | None = None):
    """Load a hub id, a saved model, or a visiontune run folder (LoRA adapter + processor + metadata);
    `base_model` replaces the base a LoRA run records."""
    path = str(path)
    torch_dtype = resolve_dtype(dtype)
    metadata = read_run_metadata(path) if Path(path).is_dir() else {}
    if Path(path).is_dir() and is_adapter_folder(path):
        from peft import PeftModel

        model = load_base_model(base_model_of(path, base_model), torch_dtype,
                                config_overrides=metadata.get(MODEL_CONFIG_KEY))
        model = PeftModel.from_pretrained(model, path)
        if merge_adapter:
            model = model.merge_and_unload()  # plain weights generate faster than an adapter wrapper
    else:
        model = load_base_model(path, torch_dtype)
    has_processor = any((Path(path) / name).exists() for name in ("processor_config.json", "preprocessor_config.json"))
    processor = load_processor(path if has_processor else base_model_of(path, base_model), log=log,
                               base_model=base_model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return model, processor, metadata
