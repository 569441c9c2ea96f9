"""Large row files read lazily: the byte-offset index, lazy chat records, images from a zip, and bad rows or
images found when read (an error naming them, or skipped and counted)."""

from __future__ import annotations

import json
import zipfile

import pytest
from PIL import Image

import visiontune.data.row_index as row_index
from visiontune.api.train import train
from visiontune.data.images import ImageLoadError, load_image
from visiontune.data.lazy_records import LazyRecords
from visiontune.data.loading import DataSpec
from visiontune.data.records import DataError
from visiontune.tasks.chat.formats import load_conversation_records

QUIET = dict(log=lambda *_: None)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_CACHE", str(tmp_path / "cache"))


def _rows(count: int) -> list[dict]:
    return [{"id": f"GCC_{i}", "image": f"GCC_{i:09d}.jpg",
             "conversations": [{"from": "human", "value": "Give a brief description of the image.\n<image>"},
                               {"from": "gpt", "value": "caf\u00e9 \u2603 " * (i % 3) + f"row {i}"}]}
            for i in range(count)]


def test_offsets_find_every_row_across_chunk_boundaries(tmp_path, monkeypatch):
    rows = _rows(300)
    (tmp_path / "chat.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n \n")
    monkeypatch.setattr(row_index, "CHUNK_BYTES", 777)  # rows and multi-byte characters cut by chunk ends
    for name in ("chat.json", "chat.jsonl"):
        index = row_index.RowIndex.of(tmp_path / name, **QUIET)
        assert len(index) == 300 and [index[i] for i in range(300)] == rows
    assert index.where(4) == "chat.jsonl line 5"
    (tmp_path / "broken.json").write_text(json.dumps(rows[:3])[:-40] + "]")
    with pytest.raises(DataError, match="broken.json: not a valid JSON array"):
        row_index.RowIndex.of(tmp_path / "broken.json", **QUIET)
    # a second open reads the cached offsets: nothing is decoded again
    monkeypatch.setattr(row_index, "_array_offsets", None)
    assert len(row_index.RowIndex.of(tmp_path / "chat.json", **QUIET)) == 300


def _llava_set(tmp_path, count: int, corrupt: int | None = None):
    """LLaVA-CC3M-Pretrain-595K's layout: chat.json, and images.zip with the images under a top folder."""
    (tmp_path / "chat.json").write_text(json.dumps(_rows(count)))
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for i in range(count):
            image = Image.new("RGB", (32, 32), ((40 * i) % 256, 80, 160))
            path = tmp_path / "one.jpg"
            image.save(path)
            data = b"not a jpeg" if i == corrupt else path.read_bytes()
            archive.writestr(f"images/GCC_{i:09d}.jpg", data)
    return tmp_path / "chat.json", tmp_path / "images.zip"


def test_chat_rows_are_records_when_read_and_images_come_from_the_zip(tmp_path):
    data, images = _llava_set(tmp_path, 20, corrupt=7)
    records = load_conversation_records(DataSpec(str(data), images_dir=str(images), shuffle=True, seed=1,
                                                 max_samples=12), **QUIET)
    assert isinstance(records, LazyRecords) and len(records) == 12
    assert len({r.image_id for r in records}) == 12  # a shuffled sample of distinct rows
    record = next(r for r in records if r.image_id == "GCC_3")
    assert record.load_image().size == (32, 32) and record.source_row == "chat.json item 3"
    with pytest.raises(ImageLoadError, match="images.zip: 'GCC_000000007.jpg': cannot decode|cannot decode"):
        load_image("GCC_000000007.jpg", images)
    with pytest.raises(ImageLoadError, match="no member 'missing.jpg'"):
        load_image("missing.jpg", images)


def test_a_lazily_read_chat_set_trains_and_counts_what_it_skipped(tiny_models, tmp_path):
    data, images = _llava_set(tmp_path, 12, corrupt=5)
    options = dict(task="chat", model=str(tiny_models["smolvlm"]), data=str(data), images_dir=str(images),
                   train="projector", epochs=1, batch_size=4, num_workers=0, report_to="none", preflight=False,
                   **QUIET)
    with pytest.raises(ImageLoadError, match="GCC_000000005.jpg"):  # found when read, named
        train(output=str(tmp_path / "strict"), **options)
    summary = train(output=str(tmp_path / "run"), skip_bad_images=True, **options)
    assert summary["skipped_when_read"]["count"] == 1, summary["skipped_when_read"]
    assert "GCC_000000005.jpg" in summary["skipped_when_read"]["first"][0]


def test_killed_mid_epoch_a_run_on_zipped_rows_resumes_with_the_next_unseen_batch(tiny_models, tmp_path, monkeypatch):
    """HF Trainer's resume skips the epoch's trained batches by their indices (accelerate's SkipBatchSampler),
    so the skipped rows are not read again: the resumed run reads exactly the images of the batches left, and
    ends with the uninterrupted run's weights."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from visiontune.data import zip_images
    from visiontune.training.checkpoints import last_complete_checkpoint

    data, images = _llava_set(tmp_path, 16)
    settings = dict(task="chat", model=str(tiny_models["smolvlm"]), data=str(data), images_dir=str(images),
                    train="projector", learning_rate=3e-3, epochs=2, batch_size=2, save_steps=2, warmup_ratio=0.0,
                    num_workers=0, report_to="none", preflight=False, measure_mfu=False)
    train(output=str(tmp_path / "straight"), **settings, **QUIET)
    run = tmp_path / "killed"
    command = [sys.executable, "-m", "visiontune", "train", "--output", str(run)]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        command += [flag, str(value)] if not isinstance(value, bool) else [flag if value else "--no-" + flag[2:]]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None and not list(run.glob("checkpoint-6")):
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    step = int(last_complete_checkpoint(run, log=lambda *_: None).name.split("-")[1])
    assert 0 < step < 16
    reads = []
    original = zip_images.ZipImages.read
    monkeypatch.setattr(zip_images.ZipImages, "read", lambda self, name: reads.append(name) or original(self, name))
    train(output=str(run), resume=True, **settings, **QUIET)
    assert len(reads) == (16 - step) * 2  # the batches left, nothing of the ones trained before the kill
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(run / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)
