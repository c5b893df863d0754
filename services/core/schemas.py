"""The project's Avro schemas: load every `.avsc` under `<home>/schemas`, index them by full name.

Convention (enforced here): one record type per file, at `schemas/<area>/<Name>.avsc`, whose full name
is `pdo.<area>.v1.<Name>`. Every file parses on its own (no references to types in other files).
Fields of provider dataset records that hold sensitive data carry the custom attribute
`"pdo.sensitive": "<MaskingRule>"`, their default masking rule; `sensitive_fields` reads it.

    from pdo.core import schemas
    schema = schemas.get("pdo.catalog.v1.DatasetRegistered")
"""

from __future__ import annotations

import difflib
import hashlib
import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import avro.errors
import avro.schema
from avro.schema import RecordSchema, Schema

from pdo.core.compatibility import CompatibilityLevel, incompatibilities
from pdo.core.config import Settings
from pdo.core.errors import PdoError

NAMESPACE_PREFIX = "pdo"
VERSION = "v1"
DATASETS_AREA = "datasets"
# Record types events and tenant records embed (e.g. the provenance every tenant record carries).
TYPES_AREA = "types"
SENSITIVE_ATTRIBUTE = "pdo.sensitive"
EVENT_HEAD = ("event_id", "occurred_at", "actor")


class SchemaError(PdoError):
    """A schema file is unreadable, invalid, duplicated or misplaced; the message names the file(s)."""


class SchemaNotFound(PdoError, KeyError):
    """No schema has the requested full name; the message lists close matches."""


@dataclass(frozen=True)
class _Index:
    schemas: dict[str, RecordSchema]
    paths: dict[str, Path]


def schemas_root(root: Path | None = None) -> Path:
    """The folder holding the `.avsc` files: `root` if given, else `<Settings.home>/schemas`."""
    return Path(root) if root is not None else Settings.from_env().home / "schemas"


def expected_full_name(path: Path, root: Path) -> str:
    """The full name the convention requires of the file at `path`: `pdo.<area>.v1.<Name>`."""
    relative = path.relative_to(root)
    if len(relative.parts) != 2:
        raise SchemaError(
            f"schema file {path} is not at <schemas>/<area>/<Name>.avsc",
            hint=f"move it into one area folder directly under {root}",
        )
    return f"{NAMESPACE_PREFIX}.{relative.parts[0]}.{VERSION}.{path.stem}"


def parse_file(path: Path) -> Schema:
    """Parse one `.avsc` file with avro; errors name the file."""
    try:
        return avro.schema.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, avro.errors.AvroException) as exc:
        raise SchemaError(f"cannot parse schema file {path}: {exc}", hint="fix the file's JSON/Avro") from exc


def _check_convention(schema: Schema, path: Path, root: Path) -> RecordSchema:
    expected = expected_full_name(path, root)
    if not isinstance(schema, RecordSchema):
        raise SchemaError(f"schema file {path} defines a {schema.type}, not a record")
    if schema.fullname != expected:
        raise SchemaError(
            f"schema file {path} defines {schema.fullname}, but its path says it must define {expected}",
            hint="make the record's name and namespace match its folder and file name, or move the file",
        )
    return schema


@lru_cache(maxsize=16)
def _load_index(root: Path) -> _Index:
    if not root.is_dir():
        raise SchemaError(f"schema folder {root} does not exist", hint="set PDO_HOME to the project folder")
    schemas: dict[str, RecordSchema] = {}
    paths: dict[str, Path] = {}
    for path in sorted(root.rglob("*.avsc")):
        schema = _check_convention(parse_file(path), path, root)
        if schema.fullname in paths:
            raise SchemaError(
                f"{schema.fullname} is defined twice: in {paths[schema.fullname]} and in {path}",
                hint="keep one file per record type",
            )
        schemas[schema.fullname] = schema
        paths[schema.fullname] = path
    return _Index(schemas, paths)


def _index(root: Path | None) -> _Index:
    return _load_index(schemas_root(root).resolve())


def load_all(root: Path | None = None) -> dict[str, RecordSchema]:
    """Every schema under `root` (default `<home>/schemas`) by full name; parsed once per root."""
    return dict(_index(root).schemas)


def clear_cache() -> None:
    """Forget loaded schemas, so the next call reads the files again."""
    _load_index.cache_clear()


def close_matches(full_name: str, known: list[str]) -> list[str]:
    """Known names that look like `full_name`: same simple name first, then similar spellings."""
    simple = full_name.rsplit(".", 1)[-1].lower()
    same_simple = [name for name in known if name.rsplit(".", 1)[-1].lower() == simple]
    similar = difflib.get_close_matches(full_name, known, n=5, cutoff=0.6)
    return list(dict.fromkeys(same_simple + similar))


def _not_found(full_name: str, index: _Index, root: Path | None) -> SchemaNotFound:
    matches = close_matches(full_name, sorted(index.schemas))
    hint = f"did you mean {', '.join(matches)}?" if matches else "full names look like pdo.<area>.v1.<Name>"
    return SchemaNotFound(f"no schema named {full_name!r} under {schemas_root(root)}", hint=hint)


def get(full_name: str, root: Path | None = None) -> RecordSchema:
    """The schema with this full name, e.g. `pdo.catalog.v1.DatasetRegistered`; SchemaNotFound if none."""
    index = _index(root)
    if full_name not in index.schemas:
        raise _not_found(full_name, index, root)
    return index.schemas[full_name]


def path_of(full_name: str, root: Path | None = None) -> Path:
    """The `.avsc` file defining this full name; SchemaNotFound if none."""
    index = _index(root)
    if full_name not in index.paths:
        raise _not_found(full_name, index, root)
    return index.paths[full_name]


def area_of(full_name: str) -> str:
    """The area part of a full name: `pdo.catalog.v1.DatasetRegistered` -> `catalog`."""
    return full_name.split(".")[1]


def is_event(full_name: str) -> bool:
    """Whether the type is a platform event: every area but `datasets` (provider records) and `types`
    (records that others embed)."""
    return area_of(full_name) not in (DATASETS_AREA, TYPES_AREA)


PRIMITIVE_TYPES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def _collapse_primitives(node: object) -> object:
    """`{"type": "long"}` -> `"long"`, everywhere: the spec's canonical form writes primitives by name."""
    if isinstance(node, list):
        return [_collapse_primitives(item) for item in node]
    if isinstance(node, dict):
        if set(node) == {"type"} and node["type"] in PRIMITIVE_TYPES:
            return node["type"]
        return {key: _collapse_primitives(value) for key, value in node.items()}
    return node


def canonical_form(schema: Schema) -> str:
    """Avro's Parsing Canonical Form of `schema`: docs, defaults, logical types, custom attributes removed.

    avro 1.12 leaves a logical type's base as `{"type":"long"}`; the specification (and Java, fastavro)
    write `"long"`, so that is collapsed here and fingerprints agree across implementations.
    """
    tree = _collapse_primitives(json.loads(schema.canonical_form))
    return json.dumps(tree, separators=(",", ":"))


def fingerprint(schema: Schema) -> str:
    """SHA-256 of the canonical form, lower-case hex."""
    return hashlib.sha256(canonical_form(schema).encode("utf-8")).hexdigest()


def sensitive_fields(schema: RecordSchema) -> dict[str, str]:
    """Top-level field name -> default masking rule, for fields marked with `pdo.sensitive`."""
    return {
        field.name: str(field.get_prop(SENSITIVE_ATTRIBUTE))
        for field in schema.fields
        if field.get_prop(SENSITIVE_ATTRIBUTE) is not None
    }


# ---------------------------------------------------------------- evolution against git history


class _NoHistory(Exception):
    """git is missing, or the folder is not in a git work tree: there is no history to compare."""


def _run_git(repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", "-C", str(repo_root), *args], capture_output=True, text=True, check=False, timeout=60
        )
    except FileNotFoundError:
        raise _NoHistory("git is not installed") from None


def _git(repo_root: Path, *args: str) -> str:
    done = _run_git(repo_root, *args)
    if done.returncode != 0:
        if "not a git repository" in done.stderr:
            raise _NoHistory(done.stderr.strip())
        raise SchemaError(f"git {' '.join(args)} failed in {repo_root}: {done.stderr.strip()}")
    return done.stdout


def _committed_versions(toplevel: Path, relative: str) -> list[tuple[str, str]]:
    """(commit, file text) for every commit that touched `relative`, oldest first; deletions skipped."""
    versions = []
    for commit in reversed(_git(toplevel, "log", "--format=%H", "--", relative).split()):
        shown = _run_git(toplevel, "show", f"{commit}:{relative}")
        if shown.returncode == 0:  # otherwise the commit deleted the file
            versions.append((commit, shown.stdout))
    return versions


def _file_problems(path: Path, toplevel: Path) -> list[str]:
    relative = path.resolve().relative_to(toplevel).as_posix()
    text = path.read_text(encoding="utf-8")
    try:
        new = parse_file(path)
    except SchemaError as exc:
        return [str(exc)]
    problems = []
    for commit, old_text in _committed_versions(toplevel, relative):
        if old_text == text:
            continue
        try:
            old = avro.schema.parse(old_text)
        except (ValueError, avro.errors.AvroException):
            continue  # a version that never parsed was never used to write data
        for reason in incompatibilities(new, [old], CompatibilityLevel.FULL_TRANSITIVE):
            problems.append(f"{relative}: incompatible with its version in commit {commit}: {reason}")
    return problems


def evolution_problems(repo_root: Path, schemas_dir: str = "schemas") -> list[str]:
    """Why the working-tree schemas under `repo_root/schemas_dir` may not replace their committed versions.

    Each `.avsc` file is checked against every version of it in git history (FULL_TRANSITIVE: new
    readers read old data and old readers read new data). A file never committed, a folder outside git,
    or a machine without git has nothing to compare: no problems. Shallow clones compare what they have.
    """
    try:
        toplevel = Path(_git(Path(repo_root), "rev-parse", "--show-toplevel").strip()).resolve()
    except _NoHistory:
        return []
    if _run_git(toplevel, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return []  # no commit yet
    problems: list[str] = []
    for path in sorted((Path(repo_root) / schemas_dir).rglob("*.avsc")):
        problems += _file_problems(path, toplevel)
    return problems
