"""The torch-free runtime as a user without PyTorch installs it: a fresh virtual environment gets
`pip install visiontune[serve]` (the core dependencies, no torch extra) from PyPI, and its command line
predicts, evaluates and serves an ONNX export there, with the answers of the PyTorch run it came from."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A virtual environment with visiontune[serve] installed from this checkout, and no torch."""
    folder = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"{REPO}[serve]"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    for package in ("torch", "transformers", "peft"):
        assert subprocess.run([str(python), "-c", f"import {package}"], capture_output=True).returncode != 0, package
    return folder


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory) -> Path:
    from visiontune.export.onnx_export import export_onnx

    root = tmp_path_factory.mktemp("export") / "shapes-caption"
    export_onnx(str(trained_run), str(root), **QUIET)
    return root / "onnx"


def _visiontune(venv: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(venv / "bin" / "visiontune"), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_predict_and_eval_run_without_torch(venv, exported, trained_run, shapes, tmp_path):
    from visiontune.api.evaluate import evaluate
    from visiontune.api.predict import predict

    images = sorted(str(path) for path in Path(shapes["coco"]).parent.rglob("*.png"))[:4]
    rows = [json.loads(line) for line in _visiontune(venv, "predict", "--model", str(exported), "--images",
                                                     *images).stdout.splitlines()]
    expected = predict(model=str(trained_run), images=images, **QUIET)
    assert [row["prediction"] for row in rows] == [row["prediction"] for row in expected]

    _visiontune(venv, "eval", "--model", str(exported), "--data", str(shapes["coco"]), "--output", str(tmp_path / "ev"))
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    reference = evaluate(model=str(trained_run), data=str(shapes["coco"]), **QUIET)
    assert metrics["CIDEr"] == pytest.approx(reference["CIDEr"], abs=1e-6) and metrics["CIDEr"] > 1.0


@pytest.mark.slow
def test_serve_runs_without_torch(venv, exported, trained_run, shapes):
    import httpx

    from visiontune.api.predict import predict

    image = sorted(Path(shapes["coco"]).parent.rglob("*.png"))[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(venv / "bin" / "visiontune"), "serve", "--model", str(exported), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                health = httpx.get(url + "/health").json()
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read()[-3000:]
                time.sleep(0.2)
        assert health["model"] == "shapes-caption"  # the export's name, never its path
        encoded = base64.b64encode(image.read_bytes()).decode()
        reply = httpx.post(url + "/v1/predict", timeout=60, json={"image": encoded}).json()
        expected = predict(model=str(trained_run), images=[str(image)], **QUIET)[0]["prediction"]
        assert reply["results"][0]["prediction"] == expected
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_pytorch_command_without_torch_says_what_to_install(tiny_models):
    """Where torch cannot be imported, a command that needs it names the extra to install, not a traceback."""
    code = ("import sys; sys.modules['torch'] = None; from visiontune.cli import main; "
            f"sys.exit(main(['predict', '--model', {str(tiny_models['smolvlm'])!r}, '--images', 'x.png']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "visiontune[torch]" in done.stderr and "Traceback" not in done.stderr
