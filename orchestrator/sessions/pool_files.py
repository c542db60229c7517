"""Reading a user's pool file for `proxal ingest`: JSONL, JSON array, CSV, TSV, Parquet, text.

The format comes from `--format` or the file's suffix, never from its first bytes. Fields
are named by `--text-field`, `--label-field` and `--id-field` (defaults ``text``, ``label``
and none), so users keep their column names. Everything is checked here, before anything
is sent, and errors name the file, the format and how it was chosen, the row at fault and
the flag to pass. The rows go to the encoder as JSONL with proxal's own field names.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxal.runtime.errors import InvalidArgumentError, MissingDependencyError

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "txt")
_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "txt",
}
SHOWN_FIELDS = 8  # field names quoted in an error message

Record = tuple[str, Mapping[str, Any]]  # (where it is, e.g. "line 3", its fields)


@dataclass(frozen=True)
class Fields:
    """Which field of a row holds the text, the gold label and the row's own id."""

    text: str = "text"
    label: str = "label"
    id: str = ""


@dataclass(frozen=True)
class PoolFile:
    """Rows of a pool file: texts (n,), labels (n,) (None: unlabeled), ids (n,) the file's
    own ids (empty without an id field)."""

    path: Path
    format: str
    texts: list[str]
    labels: list[str | None]
    ids: list[str]
    note: str = ""  # e.g. that rows are unlabeled because no field is named 'label'

    def to_jsonl(self) -> bytes:
        """The rows as the JSONL upload the encoder parses (fields ``text``, ``label``)."""
        return "".join(
            json.dumps({"text": t} if lab is None else {"text": t, "label": lab}) + "\n"
            for t, lab in zip(self.texts, self.labels, strict=True)
        ).encode()


def format_of(path: Path, given: str = "") -> tuple[str, str]:
    """(format, how it was chosen) from `given` (--format) or the suffix of `path`."""
    if given:
        if given not in FORMATS:
            raise InvalidArgumentError(
                f"unknown --format {given!r}; use one of {', '.join(FORMATS)}"
            )
        return given, "--format"
    fmt = _BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise InvalidArgumentError(
            f"cannot tell the format of {str(path)!r} from its suffix {path.suffix!r}: pass "
            f"--format ({', '.join(FORMATS)})"
        )
    return fmt, f"suffix {path.suffix}"


def read_pool_file(path: Path, fmt: str = "", fields: Fields | None = None) -> PoolFile:
    """Read and check every row of `path` (see the module doc); InvalidArgumentError if not."""
    fields = Fields() if fields is None else fields
    fmt, chosen = format_of(path, fmt)
    what = f"{path} (read as {fmt}, from its {chosen})"
    if not path.is_file():
        problem = "is a directory" if path.is_dir() else "does not exist"
        raise InvalidArgumentError(f"{path} {problem}: pass the pool file to upload")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgumentError(f"cannot read {path}: {exc.strerror}") from None
    if not data.strip():
        raise InvalidArgumentError(f"{path} is empty: it needs one row per text")
    records = list(_records(data, fmt, what))
    if not records:
        raise InvalidArgumentError(f"{what}: no rows")
    return _rows(path, fmt, what, records, fields)


def _records(data: bytes, fmt: str, what: str) -> Iterator[Record]:
    if fmt == "parquet":
        yield from _parquet_records(data, what)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        at = data.count(b"\n", 0, exc.start) + 1
        raise InvalidArgumentError(f"{what}: line {at} is not UTF-8; re-encode the file") from None
    if fmt == "jsonl":
        yield from _jsonl_records(text, what)
    elif fmt == "json":
        yield from _json_records(text, what)
    elif fmt == "txt":
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                yield f"line {n}", {"text": line.rstrip("\r")}
    else:
        yield from _delimited_records(text, "\t" if fmt == "tsv" else ",", what)


def _jsonl_records(text: str, what: str) -> Iterator[Record]:
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise InvalidArgumentError(f"{what}: line {n}: the JSON is nested too deeply") from None
        except json.JSONDecodeError as exc:
            hint = (
                "; the file looks like one JSON array: pass --format json"
                if n == 1 and line.lstrip().startswith("[")
                else ""
            )
            raise InvalidArgumentError(
                f"{what}: line {n} is not a JSON object ({exc.msg}); JSON Lines holds one "
                f"object per line{hint}"
            ) from None
        if not isinstance(row, dict):
            raise InvalidArgumentError(
                f"{what}: line {n} is a JSON {type(row).__name__}, not an object"
            )
        yield f"line {n}", row


def _json_records(text: str, what: str) -> Iterator[Record]:
    try:
        document = json.loads(text)
    except RecursionError:
        raise InvalidArgumentError(f"{what}: the JSON is nested too deeply") from None
    except json.JSONDecodeError as exc:
        hint = (
            "; it looks like JSON Lines (one object per line): pass --format jsonl"
            if exc.msg == "Extra data"
            else ""
        )
        raise InvalidArgumentError(
            f"{what}: malformed JSON at line {exc.lineno} ({exc.msg}){hint}"
        ) from None
    if not isinstance(document, list):
        raise InvalidArgumentError(
            f"{what}: the file holds a JSON {type(document).__name__}, not an array of "
            'objects; write [{"text": ...}, ...], or pass --format jsonl for one object a line'
        )
    for n, row in enumerate(document, 1):
        if not isinstance(row, dict):
            raise InvalidArgumentError(
                f"{what}: item {n} of the array is a JSON {type(row).__name__}, not an object"
            )
        yield f"item {n}", row


def _delimited_records(text: str, delimiter: str, what: str) -> Iterator[Record]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next((row for row in reader if row), None)
        if header is None:  # only blank rows: read_pool_file said "empty" already
            return
        columns = [name.strip() for name in header]
        if len(columns) == 1 and delimiter == "," and "\t" in header[0]:
            raise InvalidArgumentError(
                f"{what}: the header has tabs and no commas; for tab-separated values pass "
                "--format tsv"
            )
        for row in reader:
            if not row:
                continue
            if len(row) != len(columns):
                quote = "; quote fields that contain commas" if delimiter == "," else ""
                raise InvalidArgumentError(
                    f"{what}: line {reader.line_num} has {len(row)} fields, the header "
                    f"{len(columns)}{quote}"
                )
            yield f"line {reader.line_num}", dict(zip(columns, row, strict=True))
    except csv.Error as exc:
        raise InvalidArgumentError(f"{what}: line {reader.line_num}: malformed ({exc})") from None


def _parquet_records(data: bytes, what: str) -> Iterator[Record]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with the store's lance
        raise MissingDependencyError("reading Parquet needs pyarrow: pip install pyarrow") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgumentError(f"{what}: not a readable Parquet file ({exc})") from None
    for n, row in enumerate(table.to_pylist(), 1):
        yield f"row {n}", row


def _shown(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN_FIELDS else ""
    return ", ".join(repr(name[:40]) for name in names[:SHOWN_FIELDS]) + more


def _rows(path: Path, fmt: str, what: str, records: list[Record], fields: Fields) -> PoolFile:
    """Texts, labels and ids from the records, each checked; errors name the row and flag."""
    first_where, first = records[0]
    if fmt in ("csv", "tsv"):
        first_where = "the header"
    names = [str(name) for name in first]
    text_field = "text" if fmt == "txt" else fields.text
    if text_field not in first:
        flag = "--text-field NAME" if fields.text == "text" else "the right --text-field"
        raise InvalidArgumentError(
            f"{what}: {first_where} has no {text_field!r} field (fields: {_shown(names)}); "
            f"pass {flag}"
        )
    label_field = None if fmt == "txt" else fields.label
    note = ""
    if label_field is not None and label_field not in first:
        if fields.label != "label":
            raise InvalidArgumentError(
                f"{what}: {first_where} has no {label_field!r} field for --label-field "
                f"(fields: {_shown(names)})"
            )
        label_field = None  # no gold labels: an unlabeled pool
        others = [n for n in names if n not in (text_field, fields.id)]
        if others:
            note = (
                f"no 'label' field, so these rows are unlabeled; if one of {_shown(others)} "
                "holds gold labels, pass --label-field NAME"
            )
    if fields.id and fields.id not in first:
        raise InvalidArgumentError(
            f"{what}: {first_where} has no {fields.id!r} field for --id-field "
            f"(fields: {_shown(names)})"
        )
    texts, labels, ids = [], [], []
    for where, row in records:
        texts.append(_text(row.get(text_field), text_field, where, what))
        labels.append(None if label_field is None else _label(row.get(label_field), where, what))
        if fields.id:
            ids.append(_row_id(row.get(fields.id), where, what))
    if fields.id and len(set(ids)) != len(ids):
        raise InvalidArgumentError(
            f"{what}: the {fields.id!r} field repeats ids; ids must be unique"
        )
    return PoolFile(path=path, format=fmt, texts=texts, labels=labels, ids=ids, note=note)


def _text(value: object, name: str, where: str, what: str) -> str:
    if not isinstance(value, str):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise InvalidArgumentError(f"{what}: {where}: {name!r} must be a string, it is {got}")
    if not value.strip():
        raise InvalidArgumentError(
            f"{what}: {where}: {name!r} is empty; remove the row or give it text"
        )
    return value


def _label(value: object, where: str, what: str) -> str | None:
    """A gold label as a stripped string: missing or blank is None, numbers become text."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise InvalidArgumentError(
            f"{what}: {where}: the label must be a string or a number, not a {type(value).__name__}"
        )
    return str(value).strip() or None


def _row_id(value: object, where: str, what: str) -> str:
    if value is None or isinstance(value, dict | list) or not str(value).strip():
        raise InvalidArgumentError(f"{what}: {where}: the id is missing or not a plain value")
    return str(value).strip()
