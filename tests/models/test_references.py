"""`--model` resolved in one place: a typo or an unreachable Hub id is one line, fast, with the near folder."""

import time

import pytest

from visiontune.cli import main
from visiontune.model_references import check_model_reference


def test_a_local_typo_names_the_closest_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "smolvlm").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert check_model_reference("./models/smolvlm") == "models/smolvlm"
    with pytest.raises(FileNotFoundError, match=r"--model ./models/smolvm: no such folder; did you mean models/smolvlm\?"):
        check_model_reference("./models/smolvm")
    with pytest.raises(FileNotFoundError, match="models/smolvm: no such folder"):  # 'models' is here: a path, not a hub id
        check_model_reference("models/smolvm")


def test_a_hub_id_offline_fails_fast_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.perf_counter()
    code = main(["predict", "--model", "someone/not-cached-model", "--images", str(tmp_path / "a.png")])
    error = capsys.readouterr().err.strip()
    assert code == 2 and time.perf_counter() - started < 10
    assert error.count("\n") == 0 and "not in the local Hub cache" in error and "offline" in error


def test_train_refuses_a_wrong_model_before_loading_data(tmp_path, capsys):
    assert main(["train", "--model", str(tmp_path / "nope"), "--data", "also-missing.jsonl",
                 "--output", str(tmp_path / "run")]) == 2
    assert "no such folder" in capsys.readouterr().err
