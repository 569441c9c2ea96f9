"""The layout holds: import-linter's contracts (pyproject.toml), no task names in the orchestrators, and no
lab-notebook references in the source."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "visiontune"


def test_import_contracts_are_kept():
    command = shutil.which("lint-imports")
    if command is None:
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    result = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(SOURCE.parent)})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and " 0 broken" in result.stdout


ORCHESTRATORS = [SOURCE / "api", SOURCE / "training", SOURCE / "inference", SOURCE / "data"]
TASK_NAME = re.compile(r"""(==|!=|\bin)\s*\(?["'](caption|classify|detect|chat)["']""")


def test_orchestrators_never_compare_a_task_name():
    offenders = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
                 for folder in ORCHESTRATORS for path in sorted(folder.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if TASK_NAME.search(line)]
    assert not offenders, "\n".join(offenders)


def test_source_names_no_sessions_or_issues():
    pattern = re.compile(r"session [0-9]|issue [0-9]", re.IGNORECASE)
    offenders = [f"{path.relative_to(ROOT)}:{number}" for path in sorted(SOURCE.rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]
    assert not offenders, offenders


def test_a_task_is_one_folder_and_one_registry_line():
    from visiontune.tasks import TASKS, task_class

    for name in TASKS:
        cls = task_class(name)
        assert cls.name == name and Path(sys.modules[cls.__module__].__file__).parent.name == name
