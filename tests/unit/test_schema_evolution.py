"""Schema evolution: every schema file stays FULL_TRANSITIVE compatible with all its committed versions."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pdo.core import schemas
from pdo.core.config import PROJECT_ROOT


def test_working_tree_schemas_are_compatible_with_their_history():
    problems = schemas.evolution_problems(PROJECT_ROOT)
    assert not problems, "incompatible schema changes (add a new versioned type instead):\n" + "\n".join(
        problems
    )


# ---------------------------------------------------------------- the check bites, in a throwaway repository

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}
PATH = "schemas/things/Thing.avsc"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(repo.parent)}
    done = subprocess.run(
        ["git", "-C", str(repo), "-c", "commit.gpgsign=false", *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return done.stdout.strip()


def write_thing(repo: Path, fields: list[dict], symbols: list[str] | None = None) -> None:
    fields = list(fields)
    if symbols is not None:
        kind = {"type": "enum", "name": "Kind", "doc": "k", "symbols": symbols}
        fields.append({"name": "kind", "type": kind, "doc": "k"})
    record = {"type": "record", "name": "Thing", "namespace": "pdo.things.v1", "doc": "t", "fields": fields}
    path = repo / PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2), encoding="utf-8")


def commit(repo: Path, message: str) -> str:
    git(repo, "add", PATH)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


ID = {"name": "id", "type": "string", "doc": "id"}


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    return root


def test_uncommitted_file_and_unchanged_file_have_nothing_to_report(repo):
    write_thing(repo, [ID], ["A", "B"])
    assert schemas.evolution_problems(repo) == []
    commit(repo, "first")
    assert schemas.evolution_problems(repo) == []


def test_folder_outside_git_has_nothing_to_report(tmp_path):
    write_thing(tmp_path, [ID])
    assert schemas.evolution_problems(tmp_path) == []


def test_new_field_without_default_is_reported_with_file_and_commit(repo):
    write_thing(repo, [ID])
    first = commit(repo, "first")
    write_thing(repo, [ID, {"name": "size", "type": "long", "doc": "s"}])
    problems = schemas.evolution_problems(repo)
    assert problems and all(PATH in p and first in p for p in problems)
    assert any("size" in p for p in problems)


def test_removed_enum_symbol_is_reported(repo):
    write_thing(repo, [ID], ["A", "B"])
    first = commit(repo, "first")
    write_thing(repo, [ID], ["A"])
    problems = schemas.evolution_problems(repo)
    assert problems and first in problems[0] and "B" in problems[0]


def test_new_optional_field_with_default_is_accepted(repo):
    write_thing(repo, [ID], ["A", "B"])
    commit(repo, "first")
    write_thing(
        repo, [ID, {"name": "note", "type": ["null", "string"], "default": None, "doc": "n"}], ["A", "B"]
    )
    assert schemas.evolution_problems(repo) == []


def test_every_committed_version_is_checked_not_only_the_last(repo):
    old_x = {"name": "x", "type": "int", "default": 0, "doc": "x"}
    write_thing(repo, [ID, old_x])
    first = commit(repo, "x is an int")
    write_thing(repo, [ID])
    second = commit(repo, "x removed (compatible: it had a default)")
    assert schemas.evolution_problems(repo) == []
    write_thing(repo, [ID, {"name": "x", "type": "string", "default": "", "doc": "x"}])
    problems = schemas.evolution_problems(repo)
    assert problems, "x came back as a string: data written by the first version cannot be read"
    assert all(first in p for p in problems) and not any(second in p for p in problems)


def test_unparsable_working_file_is_reported(repo):
    write_thing(repo, [ID])
    commit(repo, "first")
    (repo / PATH).write_text("{not json", encoding="utf-8")
    problems = schemas.evolution_problems(repo)
    assert len(problems) == 1 and "Thing.avsc" in problems[0]
