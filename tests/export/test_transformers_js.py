"""A SmolVLM export runs in transformers.js (npm `@huggingface/transformers`, under node) and writes the same text
as PyTorch. Runs when node and the npm package are present (scripts/setup.sh installs both)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "js"
QUIET = dict(log=lambda *_: None)


def _transformers_js_ready() -> bool:
    return shutil.which("node") is not None and (JS / "node_modules" / "@huggingface" / "transformers").is_dir()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (scripts/setup.sh installs it)")
def test_smolvlm_export_writes_the_same_text_in_transformers_js(trained_run, shapes, tmp_path):
    from visiontune.api.predict import predict
    from visiontune.data.images import load_image
    from visiontune.export.onnx_export import export_onnx
    from visiontune.models.prompt_encoding import VLMCollator
    from visiontune.models.run_base import read_run_metadata
    from visiontune.models.vlm import load_processor
    from visiontune.tasks import task_from_metadata

    assert _transformers_js_ready(), "npm install --ignore-scripts --prefix tests/js (scripts/setup.sh does it)"
    export_onnx(str(trained_run), str(tmp_path / "smolvlm-onnx"), **QUIET)  # merges the LoRA run first
    files = sorted(Path(shapes["images"]).glob("*.png"))[:3]
    expected = predict(model=str(trained_run), images=[str(f) for f in files], max_new_tokens=24, **QUIET)
    task = task_from_metadata(read_run_metadata(trained_run))
    messages = json.dumps(task.messages())
    processor = load_processor(str(trained_run))
    for file, row in zip(files, expected):
        done = subprocess.run(["node", str(JS / "generate.mjs"), str(tmp_path / "smolvlm-onnx"), str(file), messages,
                               "24"], capture_output=True, text=True, cwd=JS, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        js = json.loads(done.stdout.strip().splitlines()[-1])
        ours = VLMCollator(processor, with_labels=False).encode_prompts([load_image(file)], [task.messages()])
        assert js["prompt_ids"] == ours["input_ids"][0].tolist()  # the same prompt, image tokens and tiles
        assert js["text_out"].strip() == row["prediction"], (file.name, js["text_out"], row["prediction"])
