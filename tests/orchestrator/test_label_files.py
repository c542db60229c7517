"""Label files: every format round-trips, and broken files are refused with their place."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from proxal.orchestrator_service.sessions.label_files import (
    CSV,
    FORMATS,
    JSONL,
    LABEL_STUDIO,
    format_labels,
    format_of,
    parse_labels,
)
from proxal.runtime.errors import InvalidArgumentError

ROWS = [
    {"id": 3, "text": 'a "quoted", comma', "label": "x", "annotator": "ann"},
    {"id": 1, "text": "ünïcode\nnewline", "label": "y z", "annotator": "bob"},
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_the_annotator(fmt: str) -> None:
    assert parse_labels(format_labels(ROWS, fmt), fmt) == [(3, "x", "ann"), (1, "y z", "bob")]


def test_files_without_annotators_and_odd_names() -> None:
    assert parse_labels(b"id,label\n1,x\n", CSV) == [(1, "x", "")]
    assert parse_labels(b'{"id": 1, "label": "x", "annotator": null}\n', JSONL) == [(1, "x", "")]
    odd = b'{"id": 1, "label": "x", "annotator": " Jo Smith/ops "}\n'
    assert parse_labels(odd, JSONL) == [(1, "x", "Jo-Smith-ops")]  # a valid annotator name


def test_format_from_suffix() -> None:
    assert format_of(Path("a.JSONL")) == JSONL and format_of(Path("b.csv")) == CSV
    assert format_of(Path("c.json")) == LABEL_STUDIO and format_of(Path("d.txt"), CSV) == CSV
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
    ],
)
def test_broken_files_say_where(data: bytes, fmt: str, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_labels(data, fmt)
