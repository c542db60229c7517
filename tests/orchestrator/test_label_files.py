"""Label files: every format round-trips, and broken files are refused with their place."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from proxal.orchestrator_service.sessions.label_files import (
    CSV,
    EXPORT_FORMATS,
    HF,
    JSONL,
    LABEL_STUDIO,
    PARQUET,
    format_labels,
    format_of,
    hf_members,
    parse_labels,
)
from proxal.runtime.errors import FailedPreconditionError, InvalidArgumentError

ROWS = [
    {"id": 3, "text": 'a "quoted", comma', "label": "x", "annotator": "ann"},
    {"id": 1, "text": "ünïcode\nnewline", "label": "y z", "annotator": "bob"},
]


CLASSES = ["x", "y z", "ünused"]


@pytest.mark.parametrize("fmt", EXPORT_FORMATS)
def test_round_trip_keeps_the_annotator(fmt: str) -> None:
    data = format_labels(ROWS, fmt, CLASSES)
    assert parse_labels(data, fmt) == [(3, "x", "ann"), (1, "y z", "bob")]


def test_parquet_has_typed_columns_and_the_classes() -> None:
    table = pq.read_table(pa.BufferReader(format_labels(ROWS, PARQUET, CLASSES)))
    assert table.schema.names == ["id", "text", "label", "annotator"]
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("label").type == pa.string()
    assert table.to_pylist() == ROWS
    assert json.loads(table.schema.metadata[b"proxal.classes"]) == CLASSES
    empty = pq.read_table(pa.BufferReader(format_labels([], PARQUET, CLASSES)))
    assert empty.num_rows == 0 and empty.schema.names == table.schema.names


def test_hf_archive_holds_the_rows_and_a_card_with_the_class_names() -> None:
    files = hf_members(format_labels(ROWS, HF, CLASSES))
    assert sorted(files) == ["README.md", "data/train.jsonl"]
    rows = [json.loads(line) for line in files["data/train.jsonl"].decode().splitlines()]
    assert rows == ROWS
    card = files["README.md"].decode()
    assert card.startswith("---\n")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["configs"][0]["data_files"] == [{"split": "train", "path": "data/train.jsonl"}]
    label = header["dataset_info"]["features"][2]
    assert label["name"] == "label"
    assert label["dtype"]["class_label"]["names"] == {"0": "x", "1": "y z", "2": "ünused"}


def test_hf_dataset_loads_with_a_class_label(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = [*ROWS, {"id": 8, "text": "t", "label": "ünused", "annotator": "ann"}]
    for name, data in hf_members(format_labels(rows, HF, CLASSES)).items():
        (tmp_path / "out" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / name).write_bytes(data)
    loaded = datasets.load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    train = loaded["train"]
    assert isinstance(train.features["label"], datasets.ClassLabel)
    assert train.features["label"].names == CLASSES
    assert train["id"] == [3, 1, 8] and train["label"] == [0, 1, 2]
    assert train["text"] == [r["text"] for r in rows] and train["annotator"] == [
        "ann",
        "bob",
        "ann",
    ]


def _tar(**files: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name.replace("__", "/"))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_hf_export_refuses_what_a_class_label_cannot_hold() -> None:
    with pytest.raises(
        FailedPreconditionError, match="outside the session's classes, " + re.escape("e.g. 'y z'")
    ):
        format_labels(ROWS, HF, ["x"])
    with pytest.raises(InvalidArgumentError, match="needs the session's classes"):
        format_labels(ROWS, HF)
    with pytest.raises(InvalidArgumentError, match="not a tar archive"):
        hf_members(b"not a tar")
    extra = _tar(**{"README.md": b"", "data__train.jsonl": b"", "evil__..__x": b""})
    with pytest.raises(InvalidArgumentError, match="must hold exactly the files"):
        hf_members(extra)


def test_files_without_annotators_and_odd_names() -> None:
    assert parse_labels(b"id,label\n1,x\n", CSV) == [(1, "x", "")]
    assert parse_labels(b'{"id": 1, "label": "x", "annotator": null}\n', JSONL) == [(1, "x", "")]
    odd = b'{"id": 1, "label": "x", "annotator": " Jo Smith/ops "}\n'
    assert parse_labels(odd, JSONL) == [(1, "x", "Jo-Smith-ops")]  # a valid annotator name


def test_format_from_suffix() -> None:
    assert format_of(Path("a.JSONL")) == JSONL and format_of(Path("b.csv")) == CSV
    assert format_of(Path("c.json")) == LABEL_STUDIO and format_of(Path("d.txt"), CSV) == CSV
    assert format_of(Path("e.Parquet")) == PARQUET and format_of(Path("dir"), HF) == HF
    with pytest.raises(InvalidArgumentError, match="cannot tell the format"):
        format_of(Path("d.txt"))


def test_label_studio_takes_the_latest_kept_annotation() -> None:
    def choice(label: str, cancelled: bool = False, **who: object) -> dict[str, object]:
        value = {"choices": [label]}
        return {
            "was_cancelled": cancelled,
            "result": [{"type": "choices", "value": value}],
            **who,
        }

    tasks = [
        {"data": {"proxal_id": 7}, "annotations": [choice("a"), choice("b"), choice("c", True)]},
        {"data": {"id": 8}, "annotations": []},  # nobody labelled it: left out
        {"id": 99, "data": {"id": 9}, "annotations": [choice("d")]},
        # who labelled: proxal's meta.annotator, else Label Studio's completed_by
        {"data": {"id": 10}, "annotations": [choice("e", meta={"annotator": "ann"})]},
        {"data": {"id": 11}, "annotations": [choice("f", completed_by={"email": "b@x.org"})]},
        {"data": {"id": 12}, "annotations": [choice("g", completed_by=3)]},
    ]
    assert parse_labels(json.dumps(tasks).encode(), LABEL_STUDIO) == [
        (7, "b", ""),
        (9, "d", ""),
        (10, "e", "ann"),
        (11, "f", "b@x.org"),
        (12, "g", "3"),
    ]


def _parquet_of(columns: dict[str, list[object]]) -> bytes:
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b'{"id": 1, "label": "x"}\n{"id": 2}\n', JSONL, "line 2: needs an 'id' and a 'label'"),
        (b'{"id": 1, "label": "x"}\nnot json\n', JSONL, "line 2: not valid JSON"),
        (b'{"id": 1.5e400, "label": "x"}\n', JSONL, "is not an integer id"),
        (b'{"id": 1.5, "label": "x"}\n', JSONL, "is not an integer id"),
        (b'{"id": true, "label": "x"}\n', JSONL, "is not an integer id"),
        (b'{"id": -1, "label": "x"}\n', JSONL, "is not an integer id"),
        (b'{"id": 99999999999999999999, "label": "x"}\n', JSONL, "is not an integer id"),
        (b'{"id": 1, "label": ""}\n', JSONL, "not a non-empty string"),
        (b"id,name\n1,x\n", CSV, "needs a header with 'id' and 'label'"),
        (b"id,label\n1,x\nzz,y\n", CSV, "line 3: id 'zz' is not an integer id"),
        (b'{"data": {}}', LABEL_STUDIO, "a JSON list of tasks"),
        (b'[{"data": {"text": "t"}, "annotations": []}]', LABEL_STUDIO, "task 0: data has no"),
        (b"\xff\xfe", JSONL, "not UTF-8"),
        (b"PAR1 not really", PARQUET, "not a readable Parquet file"),
        (
            format_labels([{"id": 1, "text": "t", "label": "", "annotator": ""}], PARQUET),
            PARQUET,
            "row 1: label '' is not a non-empty string",
        ),
        (_parquet_of({"id": [1], "name": ["x"]}), PARQUET, "needs 'id' and 'label' columns"),
    ],
)
def test_broken_files_say_where(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_labels(data, fmt)
