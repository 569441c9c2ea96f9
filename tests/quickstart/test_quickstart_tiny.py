"""`visiontune quickstart --tiny`, as a user runs it: the whole spine on a tiny random model."""

from __future__ import annotations

import json

import pytest

from visiontune.cli import main


@pytest.mark.slow
def test_quickstart_tiny_learns_captions_and_colours(tmp_path):
    assert main(["quickstart", "--tiny", "--output", str(tmp_path / "quick")]) == 0
    result = json.loads((tmp_path / "quick" / "quickstart.json").read_text())
    assert result["after"]["CIDEr"] > result["before"]["CIDEr"] + 0.5
    assert result["classify"]["score"]["accuracy"] > result["classify"]["before"]["accuracy"]
    assert (tmp_path / "quick" / "merged" / "config.json").is_file()
