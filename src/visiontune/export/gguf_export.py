"""`visiontune export --format gguf`: a SmolVLM / Idefics3-family model or run as the two files llama.cpp,
Ollama and LM Studio load, the language model and the vision projector (`mmproj`), written by llama.cpp's own
converter, with an Ollama Modelfile and the run's task beside them.

llama.cpp's converter is not a package on PyPI: it ships inside llama-cpp-python's source distribution
(vendor/llama.cpp: convert_hf_to_gguf.py, its conversion/ package and its own gguf-py, newer than PyPI's
`gguf`). `pip download` fetches that sdist once, pinned to the version tested here, and its converter parts
(about 2 MB) stay in visiontune's cache; $VISIONTUNE_LLAMA_CPP may name a llama.cpp checkout to use instead.

Composed VLMs are refused: llama.cpp's vision runtime (clip) runs the encoders and projectors of the families
it knows (SigLIP/CLIP-style ViTs with pixel shuffle and a linear or MLP projector, nanoVLM's layout among
them), not DINOv2 with a SwiGLU projector, a summary token and grid position embeddings.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from .compare import compare_metrics

LLAMA_CPP_PYTHON = "0.3.36"  # the sdist whose vendored converter this export is tested with
CONVERTER_PARTS = ("convert_hf_to_gguf.py", "conversion", "gguf-py", "LICENSE")
TEXT_TYPES = ("f16", "q8_0")  # what the converter writes itself
QUANTIZER_TYPES = ("q4_0", "q4_k_m", "q5_k_m", "q6_k")  # llama.cpp's quantizer makes these from the f16 file


def converter_folder(log=print) -> Path:
    """llama.cpp's converter: $VISIONTUNE_LLAMA_CPP (a llama.cpp checkout), else the cached copy taken from
    llama-cpp-python's sdist (downloaded with pip the first time)."""
    given = os.environ.get("VISIONTUNE_LLAMA_CPP")
    if given:
        if not (Path(given) / "convert_hf_to_gguf.py").is_file():
            raise FileNotFoundError(f"$VISIONTUNE_LLAMA_CPP={given}: no convert_hf_to_gguf.py there; point it at "
                                    f"a llama.cpp checkout, or unset it to use llama-cpp-python {LLAMA_CPP_PYTHON}'s")
        return Path(given)
    from ..zoo.registry import cache_root

    folder = cache_root().parent / "llama.cpp" / LLAMA_CPP_PYTHON
    if (folder / "convert_hf_to_gguf.py").is_file():
        return folder
    log(f"fetching llama.cpp's converter from llama-cpp-python {LLAMA_CPP_PYTHON}'s source distribution (once)")
    with tempfile.TemporaryDirectory() as scratch:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                               "--quiet", "-d", scratch, f"llama-cpp-python=={LLAMA_CPP_PYTHON}"],
                              capture_output=True, text=True, check=False)
        sdists = list(Path(scratch).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not sdists:
            raise RuntimeError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON}'s source from PyPI (pip: "
                               f"{done.stderr.strip()[-500:]}); or set $VISIONTUNE_LLAMA_CPP to a llama.cpp checkout")
        _extract_converter(sdists[0], folder)
    return folder


def _extract_converter(sdist: Path, folder: Path) -> None:
    """The converter's parts from the sdist's vendor/llama.cpp into `folder` (written whole, then moved)."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(sdist) as archive:
        prefix = next(name for name in archive.getnames() if name.endswith("/vendor/llama.cpp/convert_hf_to_gguf.py"))
        root = prefix.removesuffix("convert_hf_to_gguf.py")
        for member in archive.getmembers():
            relative = member.name.removeprefix(root)
            if member.name.startswith(root) and relative.split("/")[0] in CONVERTER_PARTS and member.isfile():
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.extractfile(member).read())
    if folder.exists():  # another process got there first
        shutil.rmtree(staging)
    else:
        staging.replace(folder)


def check_gguf_exportable(model: str) -> str:
    """llama.cpp's name for the model's language model (the family table's); refuses what llama.cpp cannot
    run, with the reason."""
    from ..models.families import FAMILIES, family_for
    from ..models.vlm import is_adapter_folder, model_type_of

    path = Path(model)
    if not ((path / "config.json").is_file() or is_adapter_folder(path)):
        raise FileNotFoundError(f"{model}: no config.json or adapter_config.json; pass a model or run folder")
    model_type = model_type_of(path)
    family = family_for(model_type)
    if family is None or family.gguf_text_architecture is None:
        supported = ", ".join(f.name for f in FAMILIES if f.gguf_text_architecture)
        reason = f": {family.no_gguf_reason}" if family is not None and family.no_gguf_reason else ""
        raise ValueError(f"{model}: GGUF export takes the {supported} family (SmolVLM); this model is "
                         f"{family.name if family else (model_type or 'unknown')!r}{reason}. Ship it with "
                         f"`visiontune export --format onnx` (torch-free runtime, transformers.js)")
    return family.gguf_text_architecture


def _staged(model: Path, stage: Path, text_architecture: str) -> Path:
    """`model`'s files linked into `stage`, with a config.json that names the language model's architecture
    (the converter picks its text converter from it; hub checkpoints name it, configs built from scratch don't)."""
    stage.mkdir(parents=True)
    for item in model.iterdir():
        if item.name != "config.json":
            (stage / item.name).symlink_to(item.resolve())
    config = json.loads((model / "config.json").read_text())
    config.setdefault("text_config", {}).setdefault("architectures", [text_architecture])
    (stage / "config.json").write_text(json.dumps(config, indent=2))
    return stage


def _convert(converter: Path, model: Path, outfile: Path, outtype: str, mmproj: bool = False) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # its own gguf-py, not PyPI's
    command = [sys.executable, str(converter / "convert_hf_to_gguf.py"), str(model), "--outfile", str(outfile),
               "--outtype", outtype] + (["--mmproj"] if mmproj else [])
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=environment)
    if done.returncode != 0 or not outfile.is_file():
        raise RuntimeError(f"llama.cpp's converter failed on {model.name} ({outtype}{', mmproj' if mmproj else ''}):\n"
                           f"{done.stderr.strip()[-2000:]}")


# GGUF tensors checked against the weights they came from (value and output projections are not permuted for
# RoPE as the query and key ones are; with LoRA merged they carry the fine-tune).
CHECKED_TENSORS = {"token_embd.weight": "text_model.embed_tokens.weight",
                   "blk.0.attn_v.weight": "text_model.layers.0.self_attn.v_proj.weight",
                   "blk.0.attn_output.weight": "text_model.layers.0.self_attn.o_proj.weight"}


def weight_difference(gguf_file: Path, model: Path) -> float:
    """Largest |difference| between a few GGUF tensors and the model's own (f16 rounding: ~1e-3)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors import safe_open

    converted = {t.name: t for t in GGUFReader(gguf_file).tensors if t.name in CHECKED_TENSORS}
    largest, found = 0.0, set()
    for weights in sorted(model.glob("*.safetensors")):
        with safe_open(weights, "np") as handle:
            for gguf_name, suffix in CHECKED_TENSORS.items():
                name = next((k for k in handle.keys() if k.endswith(suffix)), None)
                if name is None or gguf_name not in converted:
                    continue
                tensor = converted[gguf_name]
                ours = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
                theirs = handle.get_tensor(name).astype(np.float32).reshape(-1)
                largest, found = max(largest, float(np.abs(ours - theirs).max())), found | {gguf_name}
    if found != set(CHECKED_TENSORS):
        raise RuntimeError(f"{gguf_file}: tensors {sorted(set(CHECKED_TENSORS) - found)} not found to check against "
                           f"{model}")
    return largest


def _check_quantize(kinds: list[str], eval_data: str | None) -> None:
    unknown = [kind for kind in kinds if kind not in TEXT_TYPES + QUANTIZER_TYPES]
    if unknown:
        raise ValueError(f"--quantize {' '.join(unknown)}: a GGUF export writes {', '.join(TEXT_TYPES + QUANTIZER_TYPES)}")
    needs_llama_cpp = [f"--quantize {kind}" for kind in kinds if kind in QUANTIZER_TYPES] + (["--eval-data"] if eval_data
                                                                                             else [])
    if needs_llama_cpp and importlib.util.find_spec("llama_cpp") is None:
        from ..runtime.gguf import INSTALL_HINT

        raise ModuleNotFoundError(f"{', '.join(needs_llama_cpp)}: llama.cpp itself does this; {INSTALL_HINT}")


def _quantize(f16_file: Path, outfile: Path, kind: str) -> None:
    """llama.cpp's own quantizer (llama-quantize's code, through llama-cpp-python). Tensors whose rows do not
    split into its blocks (k-quants: 256 values) get its fallback type, as llama-quantize does."""
    import llama_cpp

    parameters = llama_cpp.llama_model_quantize_default_params()
    parameters.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    if llama_cpp.llama_model_quantize(str(f16_file).encode(), str(outfile).encode(), ctypes.byref(parameters)) != 0:
        raise RuntimeError(f"llama.cpp's quantizer could not make {kind} from {f16_file}")


def _metadata(gguf_file: Path) -> dict:
    """The few GGUF keys a reader checks: architecture, projector type, pre-tokenizer, chat template."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_file)
    wanted = ("general.architecture", "clip.projector_type", "tokenizer.ggml.pre", "clip.vision.projector.scale_factor",
              "clip.vision.image_size")
    found = {}
    for key in wanted:
        field = reader.fields.get(key)
        if field is not None:
            value = field.parts[field.data[0]]
            found[key] = bytes(value).decode() if value.dtype == np.uint8 else value.tolist()[0]
    found["has_chat_template"] = "tokenizer.chat_template" in reader.fields
    found["tensors"] = len(reader.tensors)
    return found


OLLAMA_TEMPLATE = ('<|im_start|>{{ range .Messages }}{{ if eq .Role "user" }}User:{{ .Content }}<end_of_utterance>\n'
                   '{{ else if eq .Role "assistant" }}Assistant: {{ .Content }}<end_of_utterance>\n'
                   '{{ end }}{{ end }}Assistant:')


def _modelfile(text_file: str, mmproj_file: str) -> str:
    """Ollama's Modelfile: the language model, then the projector, SmolVLM's turns, greedy."""
    return (f"FROM ./{text_file}\nFROM ./{mmproj_file}\nTEMPLATE \"\"\"{OLLAMA_TEMPLATE}\"\"\"\n"
            'PARAMETER stop "<end_of_utterance>"\nPARAMETER temperature 0\n')


def export_gguf(model: str, output: str, quantize: list[str] | None = None, eval_data: str | None = None,
                eval_split: str | None = None, max_eval_samples: int = 200, log=print) -> dict:
    """OUTPUT/{NAME}-f16.gguf (+ -q8_0, -q4_k_m...), OUTPUT/mmproj-{NAME}-f16.gguf, OUTPUT/Modelfile,
    OUTPUT/visiontune.json and OUTPUT/export_report.json. A LoRA run is merged first (checked as `merge` checks
    it). `eval_data`: the task metric of the run and of every file, run by llama.cpp, side by side."""
    from ..models.run_base import read_run_metadata
    from ..models.vlm import is_adapter_folder
    from .merge import merge

    text_architecture = check_gguf_exportable(model)
    _check_quantize(quantize or [], eval_data)
    converter = converter_folder(log)
    root = Path(output)
    root.mkdir(parents=True, exist_ok=True)
    name = Path(model).resolve().name
    with tempfile.TemporaryDirectory(dir=root) as scratch:
        source = Path(model)
        if is_adapter_folder(source):
            source = Path(scratch) / "merged"
            merge(model, str(source), verify_reload=False, log=log)
        stage = _staged(source, Path(scratch) / "stage", text_architecture)
        files = {}
        for outtype in dict.fromkeys(["f16", *(quantize or [])]):
            files[outtype] = root / f"{name}-{outtype}.gguf"
            if outtype in QUANTIZER_TYPES:
                _quantize(files["f16"], files[outtype], outtype)
            else:
                _convert(converter, stage, files[outtype], outtype)
            log(f"wrote {files[outtype]}")
        projector = root / f"mmproj-{name}-f16.gguf"
        _convert(converter, stage, projector, "f16", mmproj=True)
        log(f"wrote {projector}")
        report = {"model": model, "converter": f"llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON})"
                  if not os.environ.get("VISIONTUNE_LLAMA_CPP") else str(converter),
                  "text": {kind: {"file": path.name, "megabytes": round(path.stat().st_size / 2**20, 2),
                                  "weight_max_abs_difference": weight_difference(path, source),
                                  **_metadata(path)} for kind, path in files.items()},
                  "mmproj": {"file": projector.name, "megabytes": round(projector.stat().st_size / 2**20, 2),
                             **_metadata(projector)}}
        (root / "visiontune.json").write_text(json.dumps({**read_run_metadata(source), "exported_from": model},
                                                         indent=2))
    if eval_data:
        sides = {"pytorch": (model, "auto"), **{f"gguf-{kind}": (str(path), "auto") for kind, path in files.items()}}
        report["eval"] = compare_metrics(sides, eval_data, eval_split, max_eval_samples, log)
    text_file = files.get("q8_0", files[list(files)[-1]]).name  # q8_0, else the last asked for
    (root / "Modelfile").write_text(_modelfile(text_file, projector.name))
    (root / "export_report.json").write_text(json.dumps(report, indent=2))
    log(f"export report: {root / 'export_report.json'}; Ollama: cd {root} && ollama create {name} -f Modelfile")
    return report
