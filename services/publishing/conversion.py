"""A record checked against its dataset's Avro schema, field by field, with reasons a provider can act on.

Two entry points walk the schema the same way and return the value the codec writes (defaults filled in):

- `from_json(schema, value)`: a record as JSON decodes it (the CLI's JSON Lines, the HTTP ingest body).
  JSON has no timestamps, dates, decimals or bytes, so those arrive as text and are converted:

  | Avro type                          | JSON input                                                       |
  | ---------------------------------- | ---------------------------------------------------------------- |
  | timestamp-millis / -micros         | ISO 8601 text with a UTC offset ("2026-03-01T08:00:00Z"), or epoch millis / micros |
  | local-timestamp-millis / -micros   | ISO 8601 text without an offset, or epoch millis / micros        |
  | date                               | "YYYY-MM-DD", or days since 1970-01-01                           |
  | time-millis / -micros              | "HH:MM:SS[.ffffff]", or millis / micros since midnight           |
  | decimal                            | text ("1234.50") or a whole number; never a JSON fraction, which may have lost digits |
  | bytes, fixed                       | base64 text                                                      |
  | union                              | the plain value (the first branch that takes it), or Avro's tagged form {"string": "x"} |

- `conform(schema, value)`: a record as a Python program builds it (datetime, date, time, Decimal, bytes).

Both raise `RecordError` ("pm25: expected double, got 'high'"). They are stricter than the Avro encoder,
on purpose: a field the schema does not have is refused (fastavro would drop it silently, and the
provider would never learn its data is not arriving); NaN and infinities are refused (JSON cannot carry
them to tenants' HTTP streams and row filters cannot compare them: publish null in a nullable field for a
missing reading); a timestamp without a UTC offset is refused (it would be read as UTC, perhaps wrongly).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Context, Decimal, InvalidOperation, localcontext
from typing import Any

import fastavro

from pdo.core.errors import InvalidInput

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
MAX_FLOAT32 = 3.4028234663852886e38
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE = date(1970, 1, 1)
# Nesting deeper than this is refused before Python's own recursion limit would fail the whole batch.
MAX_DEPTH = 64
# How much of an offending value a reason quotes: enough to recognise it, never a whole huge string.
QUOTE_CHARS = 40
TIMESTAMPS = {
    "timestamp-millis": ("milliseconds", True),
    "timestamp-micros": ("microseconds", True),
    "local-timestamp-millis": ("milliseconds", False),
    "local-timestamp-micros": ("microseconds", False),
}
TIMES = {"time-millis": ("milliseconds", 86_400_000), "time-micros": ("microseconds", 86_400_000_000)}


class RecordError(InvalidInput):
    """A record that does not fit its schema: `path` names the field ("readings[2].value"), `problem` what."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


def parse_schema(schema: str | dict | list) -> dict | list | str:
    """fastavro's parsed form of a schema given as JSON text or a decoded object (parsed ones pass through)."""
    if isinstance(schema, dict) and schema.get("__fastavro_parsed"):
        return schema
    if isinstance(schema, str):
        schema = json.loads(schema)
    return fastavro.parse_schema(schema, named_schemas={})


def from_json(schema: Any, value: Any) -> Any:
    """`value` as JSON decoded it, converted to the Avro values `schema` asks for; RecordError if it does not fit."""
    parsed = parse_schema(schema)
    return _Walk(_named(parsed), from_json=True).value(parsed, value, "", 0)


def conform(schema: Any, value: Any) -> Any:
    """`value` with Python values (datetime, Decimal, bytes…) checked against `schema`; defaults filled in."""
    parsed = parse_schema(schema)
    return _Walk(_named(parsed), from_json=False).value(parsed, value, "", 0)


def shown(value: Any) -> str:
    """A short description of an offending value for a reason: JSON words, strings quoted and clipped."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > QUOTE_CHARS:
            return f"{value[:QUOTE_CHARS]!r}… ({len(value)} characters)"
        return repr(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and value.bit_length() > 128:
        # str() of a huge int is slow, and past 4300 digits Python refuses it.
        return f"a whole number of {value.bit_length()} bits"
    if isinstance(value, int | float | Decimal):
        text = str(value)
        return text if len(text) <= QUOTE_CHARS else f"a number of {len(text)} digits"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return f"a list of {len(value)}"
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes"
    return f"a {type(value).__name__}"


def _named(parsed: Any) -> dict[str, Any]:
    return parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _type_name(schema: Any) -> str:
    """How a reason names a type: 'double', 'timestamp-millis', 'pdo.datasets.v1.Status', 'array'."""
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return " or ".join(_type_name(branch) for branch in schema)
    if schema.get("logicalType") == "decimal":
        return f"decimal({schema.get('precision')}, {schema.get('scale', 0)})"
    return schema.get("logicalType") or schema.get("name") or _type_name(schema["type"])


class _Walk:
    """One pass over a value guided by its schema; `from_json` says whether values come as JSON gives them."""

    def __init__(self, named: dict[str, Any], *, from_json: bool) -> None:
        self.named = named
        self.from_json = from_json

    # -- dispatch

    def value(self, schema: Any, value: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise RecordError(path, f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(schema, str):
            if schema in PRIMITIVES:
                return self.primitive(schema, value, path)
            return self.value(self.named[schema], value, path, depth + 1)
        if isinstance(schema, list):
            return self.union(schema, value, path, depth)
        logical = self.logical(schema, value, path)
        if logical is not _NO_MATCH:
            return logical
        kind = schema["type"]
        if kind == "record":
            return self.record(schema, value, path, depth)
        if kind == "enum":
            return self.enum(schema, value, path)
        if kind == "array":
            return self.array(schema, value, path, depth)
        if kind == "map":
            return self.map(schema, value, path, depth)
        if kind == "fixed":
            return self.binary(value, path, size=schema["size"], name=schema["name"])
        return self.value(kind, value, path, depth + 1)  # {"type": "string"} and the like

    # -- primitives

    def primitive(self, kind: str, value: Any, path: str) -> Any:
        if kind == "null":
            if value is not None:
                raise RecordError(path, f"expected null, got {shown(value)}")
            return None
        if kind == "boolean":
            if not isinstance(value, bool):
                raise RecordError(path, f"expected boolean (true or false), got {shown(value)}")
            return value
        if kind in INT_RANGE:
            return self.integer(kind, value, path)
        if kind in {"float", "double"}:
            return self.floating(kind, value, path)
        if kind == "string":
            return self.string(value, path)
        return self.binary(value, path)

    def integer(self, kind: str, value: Any, path: str, what: str | None = None) -> int:
        what = what or kind
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecordError(path, f"expected {what}, got {shown(value)}")
        low, high = INT_RANGE[kind]
        if not low <= value <= high:
            raise RecordError(path, f"{shown(value)} is out of range for {what} ({low} to {high})")
        return value

    def floating(self, kind: str, value: Any, path: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecordError(path, f"expected {kind}, got {shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise RecordError(path, f"{shown(value)} is too large for {kind}") from None
        if not math.isfinite(number):
            raise RecordError(
                path,
                f"{shown(value)} is not a finite number (for a missing value, publish null in a nullable field)",
            )
        if kind == "float" and abs(number) > MAX_FLOAT32:
            raise RecordError(path, f"{shown(value)} is too large for a 32-bit float")
        return number

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise RecordError(path, f"expected string, got {shown(value)}")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            # JSON's "\ud800" escapes decode to lone surrogates, which no UTF-8 reader can take.
            raise RecordError(
                path, f"is not valid Unicode text (lone surrogate at character {error.start})"
            ) from None
        return value

    def binary(self, value: Any, path: str, size: int | None = None, name: str = "bytes") -> bytes:
        if self.from_json:
            if not isinstance(value, str):
                raise RecordError(path, f"expected {name} as base64 text, got {shown(value)}")
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise RecordError(path, f"{shown(value)} is not base64 text") from None
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        else:
            raise RecordError(path, f"expected {name} (bytes), got {shown(value)}")
        if size is not None and len(data) != size:
            raise RecordError(path, f"{name} takes exactly {size} bytes, got {len(data)}")
        return data

    # -- complex types

    def record(self, schema: dict, value: Any, path: str, depth: int) -> dict[str, Any]:
        short_name = schema["name"].rpartition(".")[2]
        if not isinstance(value, dict):
            raise RecordError(path, f"expected record {short_name} (a JSON object), got {shown(value)}")
        names = [field["name"] for field in schema["fields"]]
        for key in value:
            if key not in names:
                listed = ", ".join(names[:30]) + (", …" if len(names) > 30 else "")
                raise RecordError(
                    _join(path, shown(key) if not isinstance(key, str) else key[:QUOTE_CHARS]),
                    f"is not a field of {short_name} (its fields: {listed})",
                )
        result = {}
        for field in schema["fields"]:
            name, field_path = field["name"], _join(path, field["name"])
            if name in value:
                result[name] = self.value(field["type"], value[name], field_path, depth + 1)
            elif "default" in field:
                result[name] = _default(self.named, field["type"], field["default"], field_path)
            else:
                raise RecordError(field_path, "is missing (the schema requires it: no default)")
        return result

    def enum(self, schema: dict, value: Any, path: str) -> str:
        symbols = schema["symbols"]
        if not isinstance(value, str) or value not in symbols:
            listed = ", ".join(symbols[:20]) + (", …" if len(symbols) > 20 else "")
            raise RecordError(path, f"expected one of {listed}, got {shown(value)}")
        return value

    def array(self, schema: dict, value: Any, path: str, depth: int) -> list[Any]:
        if not isinstance(value, list | tuple):
            raise RecordError(path, f"expected a list of {_type_name(schema['items'])}, got {shown(value)}")
        return [self.value(schema["items"], item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]

    def map(self, schema: dict, value: Any, path: str, depth: int) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise RecordError(
                path, f"expected a map (a JSON object) of {_type_name(schema['values'])}, got {shown(value)}"
            )
        result = {}
        for key, item in value.items():
            key_path = f"{path}[{shown(key)}]"
            if not isinstance(key, str):
                raise RecordError(key_path, "map keys must be strings")
            result[self.string(key, key_path)] = self.value(schema["values"], item, key_path, depth + 1)
        return result

    def union(self, branches: list, value: Any, path: str, depth: int) -> Any:
        if value is None and "null" in branches:
            return None
        errors = []
        for branch in branches:
            if branch == "null":
                continue
            try:
                return self.value(branch, value, path, depth + 1)
            except RecordError as error:
                errors.append(error)
        tagged = self.tagged(branches, value, path, depth)
        if tagged is not _NO_MATCH:
            return tagged
        if len(errors) == 1:
            raise errors[0]  # one real choice (e.g. ["null", "double"]): its own reason says most
        raise RecordError(path, f"expected {_type_name(branches)}, got {shown(value)}")

    def tagged(self, branches: list, value: Any, path: str, depth: int) -> Any:
        """Avro's JSON encoding of a union, {"branch name": value}, as standard tools write it."""
        if not (self.from_json and isinstance(value, dict) and len(value) == 1):
            return _NO_MATCH
        ((tag, inner),) = value.items()
        for branch in branches:
            if tag in {_type_name(branch), branch if isinstance(branch, str) else branch.get("type")}:
                return self.value(branch, inner, path, depth + 1)
        return _NO_MATCH

    # -- logical types (an unknown one is its base type, as the Avro specification says)

    def logical(self, schema: dict, value: Any, path: str) -> Any:
        logical, base = schema.get("logicalType"), schema["type"]
        if logical == "decimal" and base in {"bytes", "fixed"}:
            return self.decimal(schema, value, path)
        if logical in TIMESTAMPS and base == "long":
            return self.timestamp(logical, value, path)
        if logical == "date" and base == "int":
            return self.day(value, path)
        if logical in TIMES and base in {"int", "long"}:
            return self.time_of_day(logical, value, path)
        if logical == "uuid" and base == "string":
            return self.uuid_value(value, path)
        return _NO_MATCH

    def decimal(self, schema: dict, value: Any, path: str) -> Decimal:
        precision, scale = schema["precision"], schema.get("scale", 0)
        what = f"decimal({precision}, {scale})"
        number = self.decimal_number(value, path, what)
        if not number.is_finite():
            raise RecordError(path, f"{shown(value)} is not a finite number")
        if number and number.adjusted() >= precision - scale:
            raise RecordError(
                path, f"{shown(value)} has more than {precision - scale} digits before the point ({what})"
            )
        try:
            with localcontext(Context(prec=precision + 2)):
                exact = number.quantize(Decimal(1).scaleb(-scale))
        except InvalidOperation:
            exact = None
        if exact is None or exact != number:
            raise RecordError(path, f"{shown(value)} has more than {scale} decimal places ({what})")
        return exact

    def decimal_number(self, value: Any, path: str, what: str) -> Decimal:
        if isinstance(value, bool):
            raise RecordError(path, f"expected {what}, got {shown(value)}")
        if isinstance(value, Decimal) and not self.from_json:
            return value
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            raise RecordError(
                path,
                f'expected {what}, got the JSON fraction {shown(value)}: send decimals as text, e.g. "12.30"',
            )
        if isinstance(value, str) and self.from_json:
            try:
                return Decimal(value.strip())
            except InvalidOperation:
                raise RecordError(path, f"{shown(value)} is not a decimal number") from None
        expected = 'decimal text such as "12.30"' if self.from_json else "a Decimal"
        raise RecordError(path, f"expected {what} ({expected}), got {shown(value)}")

    def timestamp(self, logical: str, value: Any, path: str) -> datetime:
        unit, zoned = TIMESTAMPS[logical]
        if isinstance(value, int) and not isinstance(value, bool):
            self.integer("long", value, path, logical)
            try:
                moment = EPOCH + timedelta(**{unit: value})
            except OverflowError:
                raise RecordError(path, f"{shown(value)} {unit} since 1970 is out of range") from None
            return moment if zoned else moment.replace(tzinfo=None)
        if isinstance(value, str) and self.from_json:
            try:
                value_time = datetime.fromisoformat(value)
            except ValueError:
                raise RecordError(path, f"{shown(value)} is not an ISO 8601 timestamp") from None
        elif isinstance(value, datetime):
            value_time = value
        else:
            given = "ISO 8601 text" if self.from_json else "a datetime"
            raise RecordError(path, f"expected {logical} ({given} or epoch {unit}), got {shown(value)}")
        return self.zone_checked(logical, zoned, value_time, value, path)

    @staticmethod
    def zone_checked(logical: str, zoned: bool, moment: datetime, value: Any, path: str) -> datetime:
        has_zone = moment.tzinfo is not None and moment.utcoffset() is not None
        if zoned and not has_zone:
            raise RecordError(
                path, f"{shown(value)} has no UTC offset: {logical} is an instant; add 'Z' or '+08:00'"
            )
        if not zoned and has_zone:
            raise RecordError(
                path, f"{shown(value)} has a UTC offset, but {logical} is a local time without one"
            )
        return moment

    def day(self, value: Any, path: str) -> date:
        if isinstance(value, int) and not isinstance(value, bool):
            self.integer("int", value, path, "date")
            try:
                return EPOCH_DATE + timedelta(days=value)
            except OverflowError:
                raise RecordError(path, f"{shown(value)} days since 1970-01-01 is out of range") from None
        if isinstance(value, str) and self.from_json:
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise RecordError(path, f"{shown(value)} is not a date (YYYY-MM-DD)") from None
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        given = '"YYYY-MM-DD"' if self.from_json else "a date"
        raise RecordError(path, f"expected date ({given} or days since 1970-01-01), got {shown(value)}")

    def time_of_day(self, logical: str, value: Any, path: str) -> time | int:
        unit, limit = TIMES[logical]
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < limit:
                raise RecordError(path, f"{shown(value)} {unit} is not a time of day (0 to {limit - 1})")
            return value
        if isinstance(value, str) and self.from_json:
            try:
                value = time.fromisoformat(value)
            except ValueError:
                raise RecordError(path, f"{shown(value)} is not a time of day (HH:MM:SS)") from None
        if isinstance(value, time):
            if value.tzinfo is not None:
                raise RecordError(path, f"{logical} is a time of day without a UTC offset")
            return value
        raise RecordError(path, f"expected {logical} (HH:MM:SS or {unit} since midnight), got {shown(value)}")

    def uuid_value(self, value: Any, path: str) -> uuid.UUID:
        # A UUID object, as Avro readers give it back, so a value reads back equal to what was checked.
        if isinstance(value, uuid.UUID) and not self.from_json:
            return value
        text = self.string(value, path)
        try:
            return uuid.UUID(text)
        except ValueError:
            raise RecordError(path, f"{shown(value)} is not a UUID") from None


# "No logical type this walk converts" / "no tagged union branch matched": a sentinel, as None is a value.
_NO_MATCH = object()


def _default(named: dict[str, Any], schema: Any, default: Any, path: str) -> Any:
    """A field's default, written in the schema in Avro's JSON encoding, as the value to encode."""
    return _DefaultWalk(named).value(schema, default, path, 0)


class _DefaultWalk(_Walk):
    """Defaults follow Avro's JSON encoding: bytes and fixed are text of code points 0-255, not base64."""

    def __init__(self, named: dict[str, Any]) -> None:
        super().__init__(named, from_json=True)

    def binary(self, value: Any, path: str, size: int | None = None, name: str = "bytes") -> bytes:
        if isinstance(value, str):
            try:
                return value.encode("latin-1")
            except UnicodeEncodeError:
                pass
        raise RecordError(path, f"the schema's default {shown(value)} is not valid for {name}")
