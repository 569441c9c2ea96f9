"""The layout holds: import-linter's contracts (pyproject.toml), task names compared only inside tasks/,
family names only inside models/families.py, and no lab-notebook references in the source."""

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


def _compared(names, keys: bool = False) -> re.Pattern:
    """A name compared (==, !=, in) as a string literal; with `keys`, also a dict key."""
    alternatives = "|".join(re.escape(name) for name in sorted(names))
    key = rf"""|(["']({alternatives})["']\s*:)""" if keys else ""
    return re.compile(rf"""((==|!=|\bin)\s*\(?["']({alternatives})["']){key}""")


def _offenders(pattern: re.Pattern, allowed: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{number}: {line.strip()}" for path in sorted(SOURCE.rglob("*.py"))
            if allowed not in path.parents and path != allowed
            for number, line in enumerate(path.read_text().splitlines(), start=1) if pattern.search(line)]


def test_task_names_are_compared_only_inside_tasks():
    from visiontune.tasks import TASKS

    offenders = _offenders(_compared(TASKS), SOURCE / "tasks")
    assert not offenders, "\n".join(offenders)


def test_family_names_are_compared_only_in_the_families_table():
    from visiontune.models.families import FAMILIES

    names = {name for family in FAMILIES for name in (family.name, *family.aliases, *family.model_types)}
    offenders = _offenders(_compared(names, keys=True), SOURCE / "models" / "families.py")
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
