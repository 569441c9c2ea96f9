"""`torchrun --nproc_per_node 2` (gloo, CPU) trains to the weights of one process with the same global batch,
with the feature cache on in each process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SOURCE = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.skipif(shutil.which("torchrun") is None or not torch.distributed.is_available(), reason="needs torchrun")
def test_two_processes_equal_one_with_the_same_global_batch(tiny_models, shapes, tmp_path):
    env = {**os.environ, "PYTHONPATH": SOURCE, "OMP_NUM_THREADS": "1"}
    common = ["-m", "visiontune", "train", "--model", str(tiny_models["smolvlm"]), "--data", str(shapes["jsonl"]),
              "--learning-rate", "3e-3", "--epochs", "3", "--warmup-ratio", "0", "--num-workers", "0", "--report-to",
              "none", "--lora-dropout", "0", "--no-preflight", "--save-steps", "1000000"]
    # 8 images: one step per epoch either way (8 x 1 process, 4 x 2 processes), so the gradients are the same
    one = subprocess.run([sys.executable, *common, "--batch-size", "8", "--output", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, check=False)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([shutil.which("torchrun"), "--standalone", "--nproc_per_node", "2", *common,
                          "--batch-size", "4", "--output", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, check=False)
    assert two.returncode == 0, two.stderr[-3000:]
    single, distributed = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    for key in single:
        torch.testing.assert_close(distributed[key], single[key], rtol=0, atol=1e-5)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["feature_cache"]["reused"] > 0  # rank 0's cache served its later epochs
    # One process speaks for the run, and its counts are the run's: both processes' samples, over its wall time.
    assert (two.stdout + two.stderr).count("saved " + str(tmp_path / "two")) == 1
    assert (two.stdout + two.stderr).count(f"data: {shapes['jsonl']}: ") == 1
    alone = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert summary["samples"] == alone["samples"] == 24  # 3 epochs x 8 images
    assert summary["samples_per_second"] == pytest.approx(summary["samples"] / summary["train_seconds"], rel=0.01)
