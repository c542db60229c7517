"""`proxal ingest`'s reader: every format from a real file, field names, and errors that say
what was detected and which flag to pass."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from proxal.orchestrator_service.sessions.pool_files import Fields, read_pool_file
from proxal.runtime.errors import InvalidArgumentError

ROWS = [
    {"review": "great, fast delivery", "stars": "5", "sku": "a-1"},
    {"review": 'said "meh"', "stars": "3", "sku": "a-2"},
    {"review": "broken\ton arrival", "stars": "1", "sku": "a-3"},
]
TEXTS = [r["review"] for r in ROWS]
MINE = Fields(text="review", label="stars", id="sku")


def _write(path: Path, fmt: str) -> Path:
    """ROWS written as a real `fmt` file (csv/tsv via the csv module's quoting rules)."""
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "json":
        path.write_text(json.dumps(ROWS, indent=2))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    else:
        import csv

        with path.open("w", newline="") as out:
            writer = csv.DictWriter(
                out, ["sku", "review", "stars"], delimiter="," if fmt == "csv" else "\t"
            )
            writer.writeheader()
            writer.writerows(ROWS)
    return path


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("p.jsonl", "jsonl"),
        ("p.json", "json"),
        ("p.csv", "csv"),
        ("p.tsv", "tsv"),
        ("p.parquet", "parquet"),
    ],
)
def test_each_format_by_suffix_with_the_users_field_names(
    tmp_path: Path, name: str, fmt: str
) -> None:
    rows = read_pool_file(_write(tmp_path / name, fmt), fields=MINE)
    assert rows.format == fmt
    assert rows.texts == TEXTS
    assert rows.labels == ["5", "3", "1"]
    assert rows.ids == ["a-1", "a-2", "a-3"]
    uploaded = [json.loads(line) for line in rows.to_jsonl().decode().splitlines()]
    assert uploaded == [
        {"text": t, "label": s} for t, s in zip(TEXTS, ["5", "3", "1"], strict=True)
    ]


def test_txt_is_one_text_per_line_and_unlabeled(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("first text, with a comma\n\n{not json}\r\nlast\n")
    rows = read_pool_file(path)
    assert rows.texts == ["first text, with a comma", "{not json}", "last"]
    assert rows.labels == [None, None, None]


def test_format_flag_overrides_the_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path / "export.dat", "tsv")
    with pytest.raises(InvalidArgumentError, match=r"from its suffix '\.dat': pass --format"):
        read_pool_file(path, fields=MINE)
    assert read_pool_file(path, "tsv", MINE).texts == TEXTS


@pytest.mark.parametrize(
    ("name", "content", "fmt", "message"),
    [
        # a TSV named .csv: the header is one column with tabs
        (
            "p.csv",
            "text\tlabel\na\tb\n",
            "",
            r"p\.csv \(read as csv, from its suffix \.csv\): the header has tabs and no commas; "
            "for tab-separated values pass --format tsv",
        ),
        # JSON Lines named .json
        (
            "p.json",
            '{"text": "a"}\n{"text": "b"}\n',
            "",
            r"looks like JSON Lines .*: pass --format jsonl",
        ),
        ("p.json", '{"text": "a"}', "", r"holds a JSON dict, not an array of objects"),
        # a JSON array named .jsonl
        (
            "p.jsonl",
            '[{"text": "a"},\n {"text": "b"}]',
            "",
            r"line 1 is not a JSON object .*pass --format json",
        ),
        # columns named otherwise: says which fields there are and the flag
        (
            "p.csv",
            "review,stars\ngood,5\n",
            "",
            r"the header has no 'text' field \(fields: 'review', 'stars'\); pass --text-field NAME",
        ),
        (
            "p.jsonl",
            '{"body": "a"}\n',
            "",
            r"line 1 has no 'text' field \(fields: 'body'\); pass --text-field",
        ),
        ("p.csv", "text,label\na,b\n  ,c\n", "", r"line 3: 'text' is empty"),
        ("p.csv", "text,label\na,b,c\n", "", r"line 2 has 3 fields, the header 2; quote fields"),
        ("p.jsonl", '{"text": 5}\n', "", r"line 1: 'text' must be a string, it is a int"),
        ("p.csv", "", "", r"is empty"),
        ("p.parquet", "not parquet", "", r"not a readable Parquet file"),
        ("p.csv", "text\na\n", "xml", r"unknown --format 'xml'"),
        ("p.jsonl", '{"a": ' + "[" * 100_000, "", r"line 1: the JSON is nested too deeply"),
        ("p.json", "[" * 100_000, "", r"the JSON is nested too deeply"),
    ],
)
def test_errors_say_what_was_detected_and_what_to_pass(
    tmp_path: Path, name: str, content: str, fmt: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InvalidArgumentError, match=message):
        read_pool_file(path, fmt)


def test_field_flags_are_checked(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.csv", "csv")
    with pytest.raises(InvalidArgumentError, match=r"no 'grade' field for --label-field"):
        read_pool_file(path, fields=Fields(text="review", label="grade"))
    with pytest.raises(InvalidArgumentError, match=r"no 'key' field for --id-field"):
        read_pool_file(path, fields=Fields(text="review", id="key"))
    path.write_text("sku,review\nx,a\nx,b\n")
    with pytest.raises(InvalidArgumentError, match=r"the 'sku' field repeats ids"):
        read_pool_file(path, fields=Fields(text="review", id="sku"))
    path.write_text("sku,review\nx,a\ny,b\n")
    # without a label column the pool is unlabeled, not an error, and a note says so
    unlabeled = read_pool_file(path, fields=Fields(text="review"))
    assert unlabeled.labels == [None, None]
    assert unlabeled.note == (
        "no 'label' field, so these rows are unlabeled; if one of 'sku' holds gold labels, "
        "pass --label-field NAME"
    )
    assert not read_pool_file(path, fields=Fields(text="review", id="sku")).note


def test_missing_file_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"nope\.jsonl does not exist"):
        read_pool_file(tmp_path / "nope.jsonl")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InvalidArgumentError, match=r"dir\.csv is a directory"):
        read_pool_file(tmp_path / "dir.csv")
