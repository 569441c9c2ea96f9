"""Streamed sets: webdataset tar shards and parquet files (and Hub datasets with --streaming) read as rows arrive,
in the layouts of table rows; trained to --max-steps or --epochs passes, bad rows counted, resumed from the next
unseen row."""

from __future__ import annotations

import io
import json
import shutil
import tarfile

import pytest
from PIL import Image

from visiontune.api.train import train
from visiontune.data import images as image_loading
from visiontune.data.loading import DataSpec, detect_format, load_caption_records, load_labelled_records
from visiontune.data.records import DataError
from visiontune.data.streams import StreamedRecords
from visiontune.tasks.chat.formats import load_conversation_records

QUIET = dict(log=lambda *_: None)


def _jpeg(shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (shade % 256, 80, 160)).save(buffer, "JPEG")
    return buffer.getvalue()


def _shards(folder, shards: int = 2, per_shard: int = 6, corrupt: int | None = None):
    """LLaVA rows as webdataset samples: key.jpg, key.json (the row, conversations), key.txt (its caption)."""
    folder.mkdir(parents=True, exist_ok=True)
    number = 0
    for shard in range(shards):
        with tarfile.open(folder / f"part-{shard:05d}.tar", "w") as tar:
            for _ in range(per_shard):
                key = f"GCC_{number:09d}"
                row = {"id": key, "image": f"{key}.jpg", "conversations": [
                    {"from": "human", "value": "Give a brief description of the image.\n<image>"},
                    {"from": "gpt", "value": f"row {number}"}]}
                files = {"jpg": b"not a jpeg" if number == corrupt else _jpeg(40 * number),
                         "json": json.dumps(row).encode(), "txt": f"caption {number}".encode()}
                for extension, data in files.items():
                    member = tarfile.TarInfo(f"{key}.{extension}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))
                number += 1
    return folder


def _parquet(path, count: int = 10):
    import datasets

    rows = {"image": [{"bytes": _jpeg(30 * i), "path": None} for i in range(count)],
            "caption": [f"caption {i}" for i in range(count)], "label": [["cat", "dog"][i % 2] for i in range(count)]}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "label": datasets.Value("string")})
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def test_webdataset_shards_stream_in_the_layouts_of_table_rows(tmp_path):
    shards = _shards(tmp_path / "shards")
    assert detect_format(str(shards)) == "webdataset" and detect_format(str(shards / "*.tar")) == "webdataset"
    chats = load_conversation_records(DataSpec(str(shards)), **QUIET)
    assert isinstance(chats, StreamedRecords) and chats.rows is None
    rows = list(chats.rows_of_pass(0))
    assert len(rows) == 12
    record = chats.make(*rows[3])
    assert record.image_id == "GCC_000000003" and record.conversation[-1]["content"][0]["text"] == "row 3"
    assert record.load_image().size == (32, 32)  # the sample's jpg, not the file name in its JSON
    assert "part-00000.tar sample GCC_000000003" in record.source_row
    captions = load_caption_records(DataSpec(str(shards), max_samples=5), **QUIET)
    assert [captions.make(*row).captions for row in captions.rows_of_pass(0)] == [[f"caption {i}"] for i in range(5)]
    # a shuffled pass holds the same rows in another order, and the next pass another still
    shuffled = load_conversation_records(DataSpec(str(shards), shuffle=True, seed=3), **QUIET)
    first, second = ([row["id"] for row, _, _ in shuffled.rows_of_pass(n)] for n in (0, 1))
    assert sorted(first) == sorted(r["id"] for r, _, _ in rows) and first != [r["id"] for r, _, _ in rows]
    assert first != second


def test_parquet_reads_whole_or_streamed_and_says_how_many_rows(tmp_path):
    path = _parquet(tmp_path / "pairs" / "train-00000.parquet")
    assert detect_format(str(path.parent)) == "parquet"
    whole = load_caption_records(DataSpec(str(path.parent)), **QUIET)
    assert isinstance(whole, list) and len(whole) == 10 and whole[2].captions == ["caption 2"]
    records, classes = load_labelled_records(DataSpec(str(path)), **QUIET)
    assert classes == ["cat", "dog"] and [r.label for r in records[:3]] == ["cat", "dog", "cat"]
    streamed = load_caption_records(DataSpec(str(path.parent), streaming=True), **QUIET)
    assert isinstance(streamed, StreamedRecords) and streamed.rows == 10  # from the parquet footer
    assert streamed.make(*next(streamed.rows_of_pass(0))).load_image().size == (32, 32)
    with pytest.raises(DataError, match="--streaming reads caption and chat sets"):
        load_labelled_records(DataSpec(str(path), streaming=True), **QUIET)


def test_a_bad_row_of_a_stream_fails_naming_it_or_is_skipped_when_asked(tmp_path):
    path = tmp_path / "bad.parquet"
    import datasets

    datasets.Dataset.from_dict({"image": [{"bytes": _jpeg(1), "path": None}] * 3, "caption": ["a", " ", "c"]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "caption": datasets.Value("string")})).to_parquet(str(path))
    with pytest.raises(DataError, match="bad.parquet row 1 of this reader: empty or missing caption"):
        load_caption_records(DataSpec(str(path), streaming=True), **QUIET)
    assert load_caption_records(DataSpec(str(path), streaming=True, skip_bad_rows=True), **QUIET).rows == 3


def test_a_streamed_chat_set_trains_to_max_steps_and_counts_bad_images(tiny_models, tmp_path):
    shards = _shards(tmp_path / "shards", corrupt=4)
    options = dict(task="chat", model=str(tiny_models["smolvlm"]), data=str(shards), train="projector",
                   batch_size=2, num_workers=2, report_to="none", preflight=False, measure_mfu=False, **QUIET)
    with pytest.raises(ValueError, match="unknown length .* give --max-steps"):
        train(output=str(tmp_path / "no-length"), **options)
    summary = train(output=str(tmp_path / "run"), max_steps=8, skip_bad_images=True, **options)
    assert summary["steps"] == 8
    # 16 examples from 12 rows in two workers: the corrupt image is met (and counted) in each pass over shard 0
    assert summary["skipped_when_read"]["count"] >= 1
    assert "GCC_000000004.jpg" in summary["skipped_when_read"]["first"][0]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["data"]["streamed"] is True


def test_a_resumed_streamed_run_skips_trained_rows_without_decoding_them(tiny_models, tmp_path, monkeypatch):
    """The stream's first (steps x batch) examples are passed over undecoded; the run ends with the weights of
    the uninterrupted run."""
    import torch
    from safetensors.torch import load_file

    path = _parquet(tmp_path / "pairs.parquet", count=12)
    settings = dict(task="caption", model=str(tiny_models["smolvlm"]), data=str(path), streaming=True,
                    train="projector", learning_rate=3e-3, max_steps=6, batch_size=2, save_steps=2, save_total_limit=3,
                    warmup_ratio=0.0, num_workers=0, report_to="none", preflight=False, measure_mfu=False,
                    keep_skills=False)
    train(output=str(tmp_path / "straight"), **settings, **QUIET)
    run = tmp_path / "interrupted"
    train(output=str(run), **settings, **QUIET)
    for later in ("checkpoint-4", "checkpoint-6"):  # as if killed after the step-2 checkpoint
        shutil.rmtree(run / later)
    decoded = []
    original = image_loading._open
    monkeypatch.setattr(image_loading, "_open", lambda data, where: decoded.append(where) or original(data, where))
    train(output=str(run), resume=True, **settings, **QUIET)
    assert len(decoded) == (6 - 2) * 2 + 2  # the batches left, and the one accelerate reads ahead to see the end
    straight, resumed = load_file(tmp_path / "straight" / "model.safetensors"), load_file(run / "model.safetensors")
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=1e-6)
