"""A training process killed with SIGKILL at random moments (mid-step, mid-checkpoint write) resumes from
its last complete checkpoint and ends with the weights of a run that was never interrupted."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from visiontune.training.checkpoints import check_readable, last_complete_checkpoint


def _command(model, data, output, *extra):
    return [sys.executable, "-m", "visiontune", "train", "--model", str(model), "--data", str(data), "--output",
            str(output), "--learning-rate", "3e-3", "--epochs", "8", "--batch-size", "2", "--save-steps", "2",
            "--warmup-ratio", "0", "--num-workers", "0", "--report-to", "none", "--lora-dropout", "0",
            "--no-preflight", *extra]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(tiny_models, shapes, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    model, data = tiny_models["smolvlm"], shapes["jsonl"]
    subprocess.run(_command(model, data, tmp_path / "straight"), env=env, check=True, capture_output=True)
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _ in range(2):  # killed twice, each time some moment after a checkpoint appeared
        process = subprocess.Popen(_command(model, data, run, *(["--resume"] if kills else [])), env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen = {p.name for p in run.glob("checkpoint-*")}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if {p.name for p in run.glob("checkpoint-*")} - seen:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 1, "the run ended before it could be killed; make it longer"
    done = subprocess.run(_command(model, data, run, "--resume"), env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    straight = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    resumed = load_file(run / "adapter_model.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)


def test_a_cut_off_checkpoint_is_skipped_and_a_corrupt_one_named(tmp_path):
    whole, cut = tmp_path / "checkpoint-4", tmp_path / "checkpoint-6"
    for folder in (whole, cut):
        folder.mkdir()
        torch.save({"step": 1}, folder / "optimizer.pt")
    (whole / "trainer_state.json").write_text(json.dumps({"global_step": 4}))
    (cut / "trainer_state.json").write_text('{"global_st')  # killed while writing the last file
    messages = []
    assert last_complete_checkpoint(tmp_path, log=messages.append) == whole
    assert "checkpoint-6" in messages[0]
    (whole / "optimizer.pt").write_bytes((whole / "optimizer.pt").read_bytes()[:30])
    with pytest.raises(ValueError, match="optimizer.pt: a corrupt checkpoint file"):
        check_readable(whole)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        last_complete_checkpoint(tmp_path / "empty")
