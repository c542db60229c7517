"""Parsing uploaded pool files (JSONL, CSV or a JSON array) and adding them to the store
atomically.

The upload's header names JSONL or CSV; when it names neither, the content decides: a
JSON array (``[``), JSON Lines (``{``), else CSV. `proxal ingest` reads the other formats
(TSV, Parquet, text, other field names) on the client and sends JSONL. Everything is
validated before the store is touched, so a bad file leaves the pool as it was. Error
messages name the line to fix (1-based, counting every line of the file), say how the
upload was read, and what to pass instead.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from enum import StrEnum

from proxal.runtime.errors import InvalidArgumentError, ResourceExhaustedError
from proxal.store import Store

TEXT = "text"
LABEL = "label"
# The longest text accepted (characters). Models read at most 512 tokens (~2,500 characters
# of English), so longer texts are truncated anyway; this bounds tokenizer time and memory.
DEFAULT_MAX_TEXT_CHARS = 100_000
SHOWN_NAMES, SHOWN_NAME_CHARS = 5, 40  # field names quoted in an error message


class UploadFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    JSON = "json"  # an array of objects: inferred from the content only


@dataclass(frozen=True)
class ParsedUpload:
    """The rows of one upload: texts[i] has gold label labels[i] (None: unlabeled)."""

    texts: list[str]
    labels: list[str | None]
    format: UploadFormat


@dataclass(frozen=True)
class IngestResult:
    pool: str
    split: str
    first_id: int
    rows_added: int
    total_rows: int
    classes: list[str]


def ingest_upload(
    store: Store,
    pool: str,
    split: str,
    data: bytes,
    fmt: UploadFormat | None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> IngestResult:
    """Parse `data` and add its rows to `pool` as `split` in one commit."""
    parsed = parse_upload(data, fmt, max_text_chars)
    first_id, rows_added = store.add_pool_rows(pool, split, parsed.texts, parsed.labels)
    info = store.pool_info(pool)
    return IngestResult(
        pool=pool,
        split=split,
        first_id=first_id,
        rows_added=rows_added,
        total_rows=info.rows,
        classes=info.classes,
    )


def parse_upload(
    data: bytes, fmt: UploadFormat | None, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
) -> ParsedUpload:
    """Decode and parse a whole upload; `fmt` None infers JSONL vs CSV from the content.

    A text longer than `max_text_chars` characters is ResourceExhaustedError.
    """
    text = _decode(data)
    if not text.strip():
        raise InvalidArgumentError(
            "the upload is empty: send a JSONL file (one object with a 'text' field per line) "
            "or a CSV file with a 'text' column"
        )
    if fmt is None:
        fmt = _infer_format(text)
    parse = {
        UploadFormat.JSONL: _parse_jsonl,
        UploadFormat.CSV: _parse_csv,
        UploadFormat.JSON: _parse_json_array,
    }[fmt]
    texts, labels = parse(text, max_text_chars)
    return ParsedUpload(texts=texts, labels=labels, format=fmt)


def _infer_format(text: str) -> UploadFormat:
    """A JSON array if the text starts with '[', JSON Lines with '{', else CSV."""
    start = text.lstrip()[:1]
    if start == "[":
        return UploadFormat.JSON
    return UploadFormat.JSONL if start == "{" else UploadFormat.CSV


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidArgumentError(
            f"line {line}: the upload is not valid UTF-8 (byte {exc.start}: {exc.reason}); "
            "re-encode the file as UTF-8"
        ) from exc


def _shown(names: list[str]) -> str:
    """The first few field names, each cut short: error messages quote client data."""
    shown = [
        name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "..."
        for name in names[:SHOWN_NAMES]
    ]
    return repr(shown)[:-1] + (f", ... ({len(names)} in all)]" if len(names) > SHOWN_NAMES else "]")


def _check_text(value: object, where: str, max_chars: int) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(
            f"{where}: '{TEXT}' must be a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise InvalidArgumentError(
            f"{where}: '{TEXT}' is empty or whitespace-only; remove the row or give it text"
        )
    if len(value) > max_chars:
        raise ResourceExhaustedError(
            f"{where}: '{TEXT}' is {len(value)} characters long, over the server's limit "
            f"of {max_chars} (--max-text-chars); shorten or split it"
        )
    return value


def _label(value: object, where: str) -> str | None:
    """A gold label as a stripped string: missing or blank is None, numbers become text."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        raise InvalidArgumentError(
            f"{where}: '{LABEL}' must be a string or a number, got {type(value).__name__}"
        )
    label = str(value).strip()
    return label or None


def _parse_jsonl(text: str, max_text_chars: int) -> tuple[list[str], list[str | None]]:
    texts: list[str] = []
    labels: list[str | None] = []
    # Split on "\n" only: str.splitlines() would also split inside strings on U+2028 etc.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except RecursionError:
            raise InvalidArgumentError(
                f"line {number}: the JSON is nested too deeply; send flat objects"
            ) from None
        except json.JSONDecodeError as exc:
            hint = (
                "; the upload looks like one JSON array: send it without a format (the "
                "encoder reads arrays) or as JSON Lines"
                if line.startswith("[")
                else ""
            )
            raise InvalidArgumentError(
                f"line {number}: malformed JSON ({exc.msg} at column {exc.colno}); "
                f"each line must be one JSON object{hint}"
            ) from exc
        if not isinstance(row, dict):
            raise InvalidArgumentError(
                f"line {number}: expected a JSON object, got {type(row).__name__}"
            )
        text_, label = _object_row(row, f"line {number}", max_text_chars)
        texts.append(text_)
        labels.append(label)
    if not texts:
        raise InvalidArgumentError("the upload has no rows")
    return texts, labels


def _object_row(row: dict[str, object], where: str, max_text_chars: int) -> tuple[str, str | None]:
    """(text, label) of one JSON object; the error names where it is and its fields."""
    if TEXT not in row:
        raise InvalidArgumentError(
            f"{where}: missing the '{TEXT}' field (fields: {_shown(sorted(row))}); "
            f"`proxal ingest --text-field NAME` reads another field"
        )
    return _check_text(row[TEXT], where, max_text_chars), _label(row.get(LABEL), where)


def _parse_json_array(text: str, max_text_chars: int) -> tuple[list[str], list[str | None]]:
    """A JSON array of objects; errors name the line where the object at fault starts."""
    decoder = json.JSONDecoder()
    start = len(text) - len(text.lstrip())
    try:
        document, end = decoder.raw_decode(text, start)
    except RecursionError:
        raise InvalidArgumentError(
            "the JSON array is nested too deeply; send flat objects"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(
            f"line {exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); the upload "
            "was read as a JSON array because it starts with '['"
        ) from exc
    if text[end:].strip():
        line = text.count("\n", 0, end) + 1
        raise InvalidArgumentError(f"line {line}: text after the JSON array; send one array")
    texts: list[str] = []
    labels: list[str | None] = []
    for number, row in enumerate(document, start=1):
        if not isinstance(row, dict):
            raise InvalidArgumentError(
                f"item {number} of the JSON array: expected an object, got {type(row).__name__}"
            )
        text_, label = _object_row(row, f"item {number} of the JSON array", max_text_chars)
        texts.append(text_)
        labels.append(label)
    if not texts:
        raise InvalidArgumentError("the upload is an empty JSON array")
    return texts, labels


def _parse_csv(text: str, max_text_chars: int) -> tuple[list[str], list[str | None]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(row for row in reader if row)  # the text is not blank: a row exists
        columns = [name.strip() for name in header]
        if TEXT not in columns:
            tabs = len(columns) == 1 and "\t" in header[0]
            fix = (
                "it has tabs and no commas: send CSV, or use `proxal ingest --format tsv`"
                if tabs
                else f"name the column with the texts '{TEXT}', or use `proxal ingest "
                "--text-field NAME`"
            )
            raise InvalidArgumentError(
                f"line {reader.line_num}: the upload was read as CSV and its header has no "
                f"'{TEXT}' column (columns: {_shown(columns)}); {fix}"
            )
        text_col = columns.index(TEXT)
        label_col = columns.index(LABEL) if LABEL in columns else None
        texts: list[str] = []
        labels: list[str | None] = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(columns):
                raise InvalidArgumentError(
                    f"line {reader.line_num}: {len(row)} fields, the header has {len(columns)}; "
                    "quote fields that contain commas"
                )
            where = f"line {reader.line_num}"
            texts.append(_check_text(row[text_col], where, max_text_chars))
            labels.append(None if label_col is None else _label(row[label_col], where))
    except csv.Error as exc:
        raise InvalidArgumentError(f"line {reader.line_num}: malformed CSV ({exc})") from exc
    if not texts:
        raise InvalidArgumentError("the CSV file has a header but no rows")
    return texts, labels
