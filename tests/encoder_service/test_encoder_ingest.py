"""IngestPool and GetPool over a real gRPC server and store, with real Banking77 rows."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import grpc
import pytest
from proxal.encoder.v1 import encoder_pb2
from proxal.encoder_service.ingest import UploadFormat, parse_upload
from proxal.runtime.errors import InvalidArgumentError, ResourceExhaustedError

JSONL = encoder_pb2.FILE_FORMAT_JSONL
CSV = encoder_pb2.FILE_FORMAT_CSV


def to_jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def to_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["text", "label"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def snapshot(encoder_server, pool: str) -> tuple[list[object], ...] | None:
    """Everything the store holds for `pool` (None if it does not exist)."""
    if not encoder_server.store.has_pool(pool):
        return None
    table = encoder_server.store.pool_rows(pool)
    return tuple(table.column(name).to_pylist() for name in table.column_names)


# ----------------------------------------------------------------- parsing (no server)


def test_parse_jsonl_labels_become_strings_or_none() -> None:
    data = (
        b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": 3}\n'
        b'{"text": "c"}\n{"text": "d", "label": ""}\n{"text": "e", "label": null}\n'
    )
    parsed = parse_upload(data, UploadFormat.JSONL)
    assert parsed.texts == ["a", "b", "c", "d", "e"]
    assert parsed.labels == ["x", "3", None, None, None]


def test_parse_csv_quoted_fields_and_missing_label_column() -> None:
    data = b'label,text\nx,"hello, world"\n,"two\nlines"\n'
    parsed = parse_upload(data, UploadFormat.CSV)
    assert parsed.texts == ["hello, world", "two\nlines"]
    assert parsed.labels == ["x", None]
    assert parse_upload(b"text\nonly text\n", UploadFormat.CSV).labels == [None]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"text": "a"}\n', UploadFormat.JSONL),
        (b'\xef\xbb\xbf  {"text": "a"}\n', UploadFormat.JSONL),
        (b"text,label\na,b\n", UploadFormat.CSV),
        (b' [{"text": "a"}]\n', UploadFormat.JSON),
    ],
)
def test_format_inferred_from_content(data: bytes, expected: UploadFormat) -> None:
    parsed = parse_upload(data, None)
    assert parsed.format is expected and parsed.texts == ["a"]


@pytest.mark.parametrize(
    ("data", "fmt", "message"),
    [
        (b"", None, "empty"),
        (b" \n\n", None, "empty"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', None, "line 2: the upload is not valid UTF-8"),
        (b'{"text": "ok"}\n{"text": "a",}\n', UploadFormat.JSONL, "line 2: malformed JSON"),
        (b'{"text": "ok"}\n["a"]\n', UploadFormat.JSONL, "line 2: expected a JSON object"),
        (b'{"text": "ok"}\n{"txt": "a"}\n', UploadFormat.JSONL, "line 2: missing the 'text'"),
        (b'{"text": "ok"}\n{"text": 5}\n', UploadFormat.JSONL, "line 2: 'text' must be a string"),
        (b'{"text": "ok"}\n\n{"text": " \\t"}\n', UploadFormat.JSONL, "line 3: 'text' is empty"),
        (b'{"text": "a", "label": [1]}\n', UploadFormat.JSONL, "line 1: 'label' must be"),
        (b"sentence,label\na,b\n", UploadFormat.CSV, "no 'text' column"),
        (b"text,label\na,b\n   ,c\n", UploadFormat.CSV, "line 3: 'text' is empty"),
        (b"text,label\na,b,c\n", UploadFormat.CSV, "line 2: 3 fields, the header has 2"),
        (b"text,label\n", UploadFormat.CSV, "header but no rows"),
        # what was detected, and what to pass instead
        (b"text\tlabel\na\tb\n", None, "read as CSV .* tabs and no commas.*--format tsv"),
        (b"review,stars\na,5\n", None, "read as CSV .*--text-field NAME"),
        (b'[{"text": "a"},\n{"text": "b"}]', UploadFormat.JSONL, "looks like one JSON array"),
        (b'[{"text": "a"}, {"body": "b"}]', None, "item 2 of the JSON array: missing the 'text'"),
        (b'[{"text": "a"}, "b"]', None, "item 2 of the JSON array: expected an object"),
        (b'[{"text": "a"}] [1]', None, "text after the JSON array"),
        (b"[]", None, "empty JSON array"),
        (b"[" * 100_000, None, "nested too deeply"),
        (b'{"text": "a"}\n{"a": ' + b"[" * 100_000, None, "line 2: the JSON is nested too deeply"),
    ],
)
def test_parse_errors_say_what_to_fix(data: bytes, fmt: UploadFormat | None, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message):
        parse_upload(data, fmt)


@pytest.mark.parametrize(("fmt", "line"), [(UploadFormat.JSONL, 2), (UploadFormat.CSV, 3)])
def test_text_over_the_limit_is_resource_exhausted(fmt: UploadFormat, line: int) -> None:
    rows = [{"text": "short"}, {"text": "x" * 11}]
    data = to_jsonl(rows) if fmt is UploadFormat.JSONL else to_csv(rows)
    assert parse_upload(data, fmt, max_text_chars=11).texts[1] == "x" * 11
    with pytest.raises(ResourceExhaustedError, match=f"line {line}: 'text' is 11 characters"):
        parse_upload(data, fmt, max_text_chars=10)


def test_errors_quote_at_most_a_few_short_field_names() -> None:
    """Error messages travel as gRPC status details (8 KiB): a long quote used to reach the
    client as RESOURCE_EXHAUSTED about metadata instead of the message."""
    names = {f"{i}{'k' * 10_000}": 1 for i in range(100)}
    with pytest.raises(InvalidArgumentError, match=r"\(100 in all\)") as err:
        parse_upload((json.dumps(names) + "\n").encode(), UploadFormat.JSONL)
    assert len(str(err.value)) < 500
    with pytest.raises(InvalidArgumentError, match="no 'text' column") as err:
        parse_upload(("k" * 100_000 + ",label\na,b\n").encode(), UploadFormat.CSV)
    assert len(str(err.value)) < 500


# ----------------------------------------------------------------- IngestPool over gRPC


def test_ingest_jsonl_then_csv_of_banking77(
    encoder_server, upload, banking_rows: list[dict[str, str]]
) -> None:
    train, test = banking_rows[:400], banking_rows[400:]
    response = upload("bank", to_jsonl(train), split="train", fmt=JSONL)
    assert (response.pool, response.split) == ("bank", "train")
    assert (response.first_id, response.rows_added, response.total_rows) == (0, 400, 400)
    assert list(response.classes) == sorted({row["label"] for row in train})

    response = upload("bank", to_csv(test), split="test", fmt=CSV)
    assert (response.first_id, response.rows_added, response.total_rows) == (400, 200, 600)
    assert list(response.classes) == sorted({row["label"] for row in banking_rows})

    rows = encoder_server.store.pool_rows("bank")
    assert rows.column("id").to_pylist() == list(range(600))
    assert rows.column("text").to_pylist() == [row["text"] for row in banking_rows]
    assert rows.column("label").to_pylist() == [row["label"] for row in banking_rows]

    info = encoder_server.stub.GetPool(encoder_pb2.GetPoolRequest(pool="bank"))
    assert info.rows == 600
    assert {s.split: s.rows for s in info.splits} == {"train": 400, "test": 200}
    assert list(info.classes) == list(response.classes)


def test_ingest_defaults_split_to_train_and_infers_csv(
    upload, banking_rows: list[dict[str, str]]
) -> None:
    response = upload("inferred", to_csv(banking_rows[:10]), chunk_bytes=100)
    assert (response.split, response.rows_added) == ("train", 10)


BAD_UPLOADS = {
    "empty": b"",
    "invalid-utf8": b'{"text": "fine"}\n{"text": "\xff\xfe"}\n',
    "malformed-json": b'{"text": "fine"}\n{"text": "broken"\n',
    "missing-text-column": b"sentence,label\nhello,greeting\n",
    "whitespace-text": b'{"text": "fine"}\n{"text": "   "}\n',
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
@pytest.mark.parametrize("pool", ["bad-new", "bank-existing"])
def test_bad_upload_is_invalid_argument_and_changes_nothing(
    encoder_server, upload, banking_rows: list[dict[str, str]], case: str, pool: str
) -> None:
    if pool == "bank-existing" and not encoder_server.store.has_pool(pool):
        upload(pool, to_jsonl(banking_rows[:5]))
    before = snapshot(encoder_server, pool)
    with pytest.raises(grpc.RpcError) as err:
        upload(pool, BAD_UPLOADS[case], split="extra")
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert snapshot(encoder_server, pool) == before


def test_error_message_names_the_line(upload) -> None:
    with pytest.raises(grpc.RpcError) as err:
        upload("lines", b'{"text": "a"}\n{"text": "b"}\n{"text": ""}\n', fmt=JSONL)
    assert "line 3" in (err.value.details() or "")


def header_chunks(header: encoder_pb2.PoolHeader | None) -> Iterator[encoder_pb2.IngestPoolChunk]:
    if header is None:
        yield encoder_pb2.IngestPoolChunk(data=b'{"text": "no header"}\n')
    else:
        yield encoder_pb2.IngestPoolChunk(header=header, data=b'{"text": "a"}\n')


@pytest.mark.parametrize(
    "header",
    [
        None,
        encoder_pb2.PoolHeader(pool=""),
        encoder_pb2.PoolHeader(pool="Bad Pool!"),
        encoder_pb2.PoolHeader(pool="../escape"),
        encoder_pb2.PoolHeader(pool="ok", split="no/slash"),
    ],
    ids=["missing", "empty-pool", "bad-pool", "path-pool", "bad-split"],
)
def test_bad_header_is_invalid_argument(
    encoder_server, header: encoder_pb2.PoolHeader | None
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        encoder_server.stub.IngestPool(header_chunks(header), timeout=30)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert not encoder_server.store.has_pool("ok")


def test_no_chunks_and_second_header_are_invalid_argument(encoder_server) -> None:
    header = encoder_pb2.PoolHeader(pool="twice")
    second = [
        encoder_pb2.IngestPoolChunk(header=header, data=b'{"text": "a"}\n'),
        encoder_pb2.IngestPoolChunk(header=header, data=b'{"text": "b"}\n'),
    ]
    for request in ([], second):
        with pytest.raises(grpc.RpcError) as err:
            encoder_server.stub.IngestPool(iter(request), timeout=30)
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert not encoder_server.store.has_pool("twice")


def test_duplicate_split_is_already_exists(
    encoder_server, upload, banking_rows: list[dict[str, str]]
) -> None:
    upload("dup", to_jsonl(banking_rows[:20]), split="train")
    before = snapshot(encoder_server, "dup")
    with pytest.raises(grpc.RpcError) as err:
        upload("dup", to_jsonl(banking_rows[20:40]), split="train")
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    assert snapshot(encoder_server, "dup") == before


def test_upload_over_the_limit_is_resource_exhausted(encoder_server, upload) -> None:
    big = to_jsonl([{"text": "x" * 1000}] * 300)  # ~300 KB > the fixture's 256 KiB limit
    with pytest.raises(grpc.RpcError) as err:
        upload("big", big, chunk_bytes=64 * 1024)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-upload-mb" in (err.value.details() or "")
    assert not encoder_server.store.has_pool("big")


def test_text_over_the_server_limit_is_resource_exhausted(encoder_server, upload) -> None:
    too_long = to_jsonl([{"text": "ok"}, {"text": "x" * 100_001}])  # default --max-text-chars
    with pytest.raises(grpc.RpcError) as err:
        upload("long", too_long, chunk_bytes=64 * 1024)
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "line 2" in (err.value.details() or "") and "--max-text-chars" in (
        err.value.details() or ""
    )
    assert not encoder_server.store.has_pool("long")


def test_get_pool_unknown_is_not_found(encoder_server) -> None:
    with pytest.raises(grpc.RpcError) as err:
        encoder_server.stub.GetPool(encoder_pb2.GetPoolRequest(pool="nope"))
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        encoder_server.stub.GetPool(encoder_pb2.GetPoolRequest(pool="Not A Name"))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("pool", "split"), [("pool\n", "train"), ("pool", "train\n")])
def test_a_name_ending_in_a_newline_is_invalid_argument(upload, pool: str, split: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        upload(pool, to_jsonl([{"text": "a"}]), split=split)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
