"""Label files in and out of a session: JSONL, CSV, Label Studio task JSON, Parquet, and a
Hugging Face `datasets` layout.

Export rows are dicts with id, text, label and annotator. Parquet is one file with those
four columns (id int64, the rest strings; the session's classes in the schema metadata,
key ``proxal.classes``). The Hugging Face layout (`HF`) is a tar archive of
``data/train.jsonl`` (the JSONL rows) and ``README.md``, a dataset card whose YAML header
declares the features, ``label`` a ``ClassLabel`` of the session's classes in their
order: ``datasets.load_dataset(dir)`` on the unpacked directory reads the labels as class
indices with their names. Import reads `FileLabel`s: id,
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
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError

JSONL, CSV, LABEL_STUDIO, PARQUET, HF = "jsonl", "csv", "label-studio", "parquet", "hf"
FORMATS = (JSONL, CSV, LABEL_STUDIO, PARQUET)  # files a session imports from
EXPORT_FORMATS = (*FORMATS, HF)
_BY_SUFFIX = {".jsonl": JSONL, ".csv": CSV, ".json": LABEL_STUDIO, ".parquet": PARQUET}
_COLUMNS = ("id", "text", "label", "annotator")
HF_DATA = "data/train.jsonl"
HF_CARD = "README.md"
_NOT_ANNOTATOR_CHARS = re.compile(r"[^A-Za-z0-9._@-]")


class FileLabel(NamedTuple):
    """One label read from a file; `annotator` is "" when the file does not say who."""

    id: int
    label: str
    annotator: str = ""


def format_of(path: Path, given: str = "") -> str:
    """The file format: `given` if set, else from the suffix (.jsonl, .csv, .json,
    .parquet)."""
    fmt = given or _BY_SUFFIX.get(path.suffix.lower(), "")
    if fmt not in EXPORT_FORMATS:
        raise InvalidArgumentError(
            f"cannot tell the format of {path.name!r}: name it .jsonl, .csv, .json (Label "
            f"Studio) or .parquet, or pass a format: {', '.join(EXPORT_FORMATS)}"
        )
    return fmt


def format_labels(rows: Sequence[dict[str, Any]], fmt: str, classes: Sequence[str] = ()) -> bytes:
    """Rows (id, text, label, annotator) as a file in `fmt`; `classes` are the session's,
    in order (Parquet metadata, the Hugging Face card's ClassLabel names)."""
    if fmt == JSONL:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    if fmt == PARQUET:
        return _parquet(rows, classes)
    if fmt == HF:
        return _hf_archive(rows, classes)
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
    raise InvalidArgumentError(
        f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}"
    )


def _parquet(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> bytes:
    """The rows as one Parquet file (zstd), the classes in its schema metadata."""
    import pyarrow as pa  # here: `proxal --help` imports this module and loads no pyarrow
    import pyarrow.parquet as pq

    types = {"id": pa.int64(), "text": pa.string(), "label": pa.string(), "annotator": pa.string()}
    schema = pa.schema(list(types.items()))
    columns = {name: [r[name] for r in rows] for name in _COLUMNS}
    metadata = {b"proxal.classes": json.dumps(list(classes), ensure_ascii=False).encode()}
    table = pa.table(columns, schema=schema.with_metadata(metadata))
    out = io.BytesIO()
    pq.write_table(table, out, compression="zstd")
    return out.getvalue()


def hf_card(classes: Sequence[str], rows: int) -> str:
    """A dataset card: YAML features (label a ClassLabel of `classes`) and a short text."""
    import yaml  # PyYAML: only this format needs it

    header = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": HF_DATA}]}
        ],
        "dataset_info": {
            "features": [
                {"name": "id", "dtype": "int64"},
                {"name": "text", "dtype": "string"},
                {
                    "name": "label",
                    "dtype": {"class_label": {"names": {str(i): c for i, c in enumerate(classes)}}},
                },
                {"name": "annotator", "dtype": "string"},
            ]
        },
    }
    front = yaml.safe_dump(header, allow_unicode=True, sort_keys=False)
    return (
        f"---\n{front}---\n\n# Labels exported by proxal\n\n{rows} labelled texts in "
        f"`{HF_DATA}`: `id` (the pool id), `text`, `label` (one of {len(classes)} classes) "
        'and `annotator`.\nLoad them with `datasets.load_dataset("<this directory>")`.\n'
    )


def _hf_archive(rows: Sequence[dict[str, Any]], classes: Sequence[str]) -> bytes:
    """A tar archive of data/train.jsonl and README.md (see the module doc)."""
    if not classes:
        raise InvalidArgumentError("a Hugging Face export needs the session's classes")
    outside = sorted({str(r["label"]) for r in rows} - set(classes))
    if outside:
        raise FailedPreconditionError(
            f"labels outside the session's classes, e.g. {outside[0][:80]!r}: a ClassLabel "
            "cannot hold them; export as jsonl or parquet instead"
        )
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            (HF_DATA, format_labels(rows, JSONL)),
            (HF_CARD, hf_card(classes, len(rows)).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def hf_members(data: bytes) -> dict[str, bytes]:
    """The files of a Hugging Face export archive by name (data/train.jsonl, README.md);
    InvalidArgumentError for anything else (not a tar, a link, another path)."""
    files: dict[str, bytes] = {}
    names: list[str] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar.getmembers():
                names.append(member.name)
                handle = tar.extractfile(member) if member.isfile() else None
                if member.name in (HF_DATA, HF_CARD) and handle is not None:
                    files[member.name] = handle.read()
    except tarfile.TarError as exc:
        raise InvalidArgumentError(f"not a tar archive: {exc}") from None
    if sorted(names) != sorted(files) or sorted(files) != sorted((HF_DATA, HF_CARD)):
        raise InvalidArgumentError(
            f"not a proxal Hugging Face export: it must hold exactly the files {HF_DATA} and "
            f"{HF_CARD}"
        )
    return files


def parse_labels(data: bytes, fmt: str) -> list[FileLabel]:
    """The labels in a file's bytes; errors name the line, row or task at fault."""
    if fmt == PARQUET:
        return _parquet_labels(data)
    if fmt == HF:
        return parse_labels(hf_members(data)[HF_DATA], JSONL)
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


def _parquet_labels(data: bytes) -> list[FileLabel]:
    """The (id, label, annotator) rows of a Parquet file with 'id' and 'label' columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise InvalidArgumentError(f"not a readable Parquet file: {exc}") from None
    if not {"id", "label"} <= set(table.column_names):
        raise InvalidArgumentError(
            f"a Parquet label file needs 'id' and 'label' columns, got {table.column_names}"
        )
    columns = [c for c in ("id", "label", "annotator") if c in table.column_names]
    return [_pair(row, f"row {n}") for n, row in enumerate(table.select(columns).to_pylist(), 1)]


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
