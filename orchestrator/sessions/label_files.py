"""Label files in and out of a session: JSONL, CSV and Label Studio task JSON.

Export rows are dicts with id, text, label and annotator. Import reads `FileLabel`s: id,
label and who made it (the "annotator" field or column; in Label Studio tasks the
annotation's ``meta.annotator``, else its ``completed_by``), so a re-import keeps who
labelled what; the text in a file is ignored (the pool has it). Label Studio tasks carry
proxal's id in ``data.proxal_id`` and the label as a ``choices`` result, which is how
`format_labels` writes them and how a Label Studio project with a Choices tag named "label"
exports them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from proxal.runtime.errors import InvalidArgumentError

JSONL, CSV, LABEL_STUDIO = "jsonl", "csv", "label-studio"
FORMATS = (JSONL, CSV, LABEL_STUDIO)
_BY_SUFFIX = {".jsonl": JSONL, ".csv": CSV, ".json": LABEL_STUDIO}
_COLUMNS = ("id", "text", "label", "annotator")
_NOT_ANNOTATOR_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


class FileLabel(NamedTuple):
    """One label read from a file; `annotator` is "" when the file does not say who."""

    id: int
    label: str
    annotator: str = ""


def format_of(path: Path, given: str = "") -> str:
    """The file format: `given` if set, else from the suffix (.jsonl, .csv, .json)."""
    fmt = given or _BY_SUFFIX.get(path.suffix.lower(), "")
    if fmt not in FORMATS:
        raise InvalidArgumentError(
            f"cannot tell the format of {path.name!r}: name it .jsonl, .csv or .json (Label "
            f"Studio), or pass a format: {', '.join(FORMATS)}"
        )
    return fmt


def format_labels(rows: Sequence[dict[str, Any]], fmt: str) -> bytes:
    """Rows (id, text, label, annotator) as a file in `fmt`."""
    if fmt == JSONL:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if fmt == CSV:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode()
    if fmt == LABEL_STUDIO:
        tasks = [
            {
                "data": {"text": r["text"], "proxal_id": r["id"]},
                "annotations": [
                    {
                        "result": [
                            {
                                "from_name": "label",
                                "to_name": "text",
                                "type": "choices",
                                "value": {"choices": [r["label"]]},
                            }
                        ],
                        "meta": {"annotator": r["annotator"]},
                    }
                ],
            }
            for r in rows
        ]
        return json.dumps(tasks, ensure_ascii=False, indent=1).encode()
    raise InvalidArgumentError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def parse_labels(data: bytes, fmt: str) -> list[FileLabel]:
    """The labels in a file's bytes; errors name the line or task at fault."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"the label file is not UTF-8: {exc}") from None
    if fmt == JSONL:
        pairs = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                pairs.append(_pair(_json(line, f"line {n}"), f"line {n}"))
        return pairs
    if fmt == CSV:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or not {"id", "label"} <= set(reader.fieldnames):
            raise InvalidArgumentError(
                f"a CSV label file needs a header with 'id' and 'label' columns, got "
                f"{reader.fieldnames}"
            )
        return [_pair(row, f"line {n}") for n, row in enumerate(reader, 2)]
    if fmt == LABEL_STUDIO:
        tasks = _json(text, "the file")
        if not isinstance(tasks, list):
            raise InvalidArgumentError("a Label Studio export is a JSON list of tasks")
        return [pair for n, task in enumerate(tasks) if (pair := _task_pair(task, n))]
    raise InvalidArgumentError(f"unknown label file format {fmt!r}; use one of {FORMATS}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{where}: not valid JSON ({exc})") from None


def _pair(row: Any, where: str) -> FileLabel:
    if not isinstance(row, dict) or "id" not in row or "label" not in row:
        raise InvalidArgumentError(f"{where}: needs an 'id' and a 'label'")
    item = row["id"]
    whole_float = isinstance(item, float) and item.is_integer()
    if whole_float or (isinstance(item, str) and item.strip().isdigit()):
        item = int(item)
    if type(item) is not int or not 0 <= item < 2**63:  # bool is not an id either
        raise InvalidArgumentError(f"{where}: id {row['id']!r} is not an integer id (0..2^63-1)")
    label = row["label"]
    if not isinstance(label, str) or not label:
        raise InvalidArgumentError(f"{where}: label {label!r} is not a non-empty string")
    return FileLabel(item, label, _annotator(row.get("annotator")))


def _annotator(value: Any) -> str:
    """Who made a label, as a valid annotator name (other characters become '-'); "" if
    the file does not say. Label Studio's `completed_by` may be a user id or object."""
    if isinstance(value, dict):
        value = value.get("email") or value.get("id")
    if value is None or isinstance(value, bool) or not isinstance(value, str | int):
        return ""
    return _NOT_ANNOTATOR_CHARS.sub("-", str(value).strip())[:64]


def _task_pair(task: Any, n: int) -> FileLabel | None:
    """The (id, label) of a Label Studio task; None for a task nobody labelled."""
    where = f"task {n}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise InvalidArgumentError(f"{where}: a task needs a 'data' object")
    data = task["data"]
    item = data.get("proxal_id", data.get("id"))
    if item is None:
        raise InvalidArgumentError(f"{where}: data has no 'proxal_id' (or 'id')")
    annotations = [
        a
        for a in task.get("annotations") or []
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    for annotation in reversed(annotations):  # the latest annotation wins
        for result in annotation.get("result") or []:
            choices = (
                (result.get("value") or {}).get("choices") if isinstance(result, dict) else None
            )
            if choices:
                meta = annotation.get("meta")
                by = meta.get("annotator") if isinstance(meta, dict) else None
                by = by or annotation.get("completed_by")
                return _pair({"id": item, "label": choices[0], "annotator": by}, where)
    return None
