"""Hostile-input fuzzing of every EncoderService RPC against a real server and store.

Per RPC, 1,000 generated requests (or request streams): mutants of valid requests,
hostile messages and raw bytes. Every call must end OK or with a client-error status;
afterwards the server is SERVING, a valid request works, and the store holds exactly what
the accepted requests changed (see `EncoderWorld` for what it holds).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence

import grpc
import numpy as np
import pytest
from hypothesis import strategies as st
from proxal.encoder.v1 import encoder_pb2

from tests.fuzz.conftest import CHECKPOINTS, EncoderWorld, snapshot
from tests.fuzz.fuzzing import (
    INT32,
    INT64,
    UINT64,
    Outcome,
    Request,
    Strategy,
    assert_serving,
    choices,
    excluding,
    fuzz_rpc,
    hostile_text,
    ints,
    ints_outside,
    invalid_names,
    invoke,
    messages,
    names,
    one,
    raw_bytes,
    requests_of,
    rpcs,
)

SERVICE = encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"]
RPCS = rpcs(SERVICE)
POOLS = ["fuzz", "tiny"]
VERSIONS = ["v1", "v2", "v3", "v4", "v5", "v6"]  # complete, complete, deleted, failed, running
FUZZ_ROWS = {"train": 8, "test": 4}

VERSION_FIELDS = {"pool": names(POOLS), "version": names(VERSIONS)}
# EmbedPool and RefreshFromCheckpoint load one encoder per (model, backend, max_length,
# precision): valid values are limited to those already loaded, so a valid request costs
# an embedding of two rows, not a model load or an ONNX export. Each valid EmbedPool adds a
# version, which every later store read pays for: they come once in 50 requests.
EMBED_INVALID = {
    "pool": excluding(names(), ["tiny"]),
    "model": excluding(hostile_text(), ["", "minilm-l6"]),
    "backend": excluding(hostile_text(), ["", "torch"]),
    "precision": excluding(hostile_text(), ["", "fp32"]),
    "max_length": ints_outside(INT32, 0, 512, [-1]),
    "batch_size": ints_outside(INT32, 0, 1024, [-1]),
}


EMBED_DEFAULTS = {"model": "", "backend": "", "precision": "", "max_length": 0, "batch_size": 0}


def version_requests() -> Strategy:
    valid = st.builds(
        encoder_pb2.VersionRequest, pool=st.sampled_from(POOLS), version=st.sampled_from(VERSIONS)
    )
    return one(requests_of(encoder_pb2.VersionRequest, valid, VERSION_FIELDS))


def embed_requests() -> Strategy:
    valid = st.builds(
        encoder_pb2.EmbedPoolRequest,
        pool=st.just("tiny"),
        batch_size=st.sampled_from([0, 1, 2]),
        max_length=st.sampled_from([0, 16]),
        precision=st.sampled_from(["", "fp32"]),
    )
    return one(requests_of(encoder_pb2.EmbedPoolRequest, valid, EMBED_INVALID, valid_one_in=50))


def refresh_requests() -> Strategy:
    fields = {
        "pool": names(["tiny"]),
        "checkpoint": choices(CHECKPOINTS, hostile_text()),
        "label_count": ints(INT64, [0, 5]),
        **{k: choices([v], EMBED_INVALID[k]) for k, v in EMBED_DEFAULTS.items()},
    }
    valid = st.builds(
        encoder_pb2.RefreshRequest,
        pool=st.just("tiny"),
        checkpoint=st.sampled_from(CHECKPOINTS),
        label_count=st.sampled_from([0, 5]),
        label_set_hash=st.sampled_from(["", "ab" * 32]),
    )
    return one(requests_of(encoder_pb2.RefreshRequest, valid, fields))


# ------------------------------------------------------------------ IngestPool streams
def _csv(header: str, rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    out.write(header + "\n")
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


VALID_UPLOADS = st.lists(
    st.fixed_dictionaries({"text": st.text(min_size=1, max_size=40).filter(str.strip)}),
    min_size=1,
    max_size=5,
).map(lambda rows: "".join(json.dumps(r) + "\n" for r in rows).encode())


def payloads() -> Strategy:
    """Upload bodies: JSONL and CSV (valid or not), garbage, bad UTF-8, oversized."""
    value = st.one_of(
        hostile_text(), st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=2)
    )
    row = st.builds(
        lambda known, other: {**other, **known},
        st.fixed_dictionaries({}, optional={"text": value, "label": value}),
        st.dictionaries(hostile_text(), value, max_size=3),
    )
    jsonl = st.builds(
        lambda rows, ascii: "".join(
            json.dumps(r, ensure_ascii=ascii) + "\n" for r in rows
        ).encode(),
        st.lists(row, max_size=6),
        st.booleans(),
    )
    csv_body = st.builds(
        _csv,
        st.one_of(
            st.sampled_from(["text", "text,label", "label,text", "txt", "", "text,text"]),
            hostile_text(),
        ),
        st.lists(st.lists(hostile_text(), max_size=3), max_size=5),
    )
    return st.one_of(
        VALID_UPLOADS,
        jsonl,
        csv_body,
        st.binary(max_size=200),
        st.sampled_from([b"", b"\xff\xfe\n", b"\xef\xbb\xbftext\nhi\n", b'{"text": "\xc3"}\n']),
        st.builds(lambda n: b'{"text": "x"}\n' * n, st.integers(5_000, 200_000)),  # too big
    )


def headers(valid: bool = False) -> Strategy:
    """Headers for pool "fuzz" (existing splits only: it must not change), pool "ingest"
    (three splits: a bounded number of uploads succeed) and, unless `valid`, invalid ones."""
    formats = [encoder_pb2.FILE_FORMAT_UNSPECIFIED, encoder_pb2.FILE_FORMAT_JSONL]

    @st.composite
    def coupled(draw: st.DrawFn) -> encoder_pb2.PoolHeader:
        pool = draw(st.sampled_from(["fuzz", "ingest"]))
        splits = st.sampled_from(["", "train", "test"] if pool == "fuzz" else ["", "a", "b"])
        split = draw(splits if valid else st.one_of(splits, invalid_names()))
        fmt = draw(st.sampled_from(formats) if valid else ints(INT32, formats))
        return encoder_pb2.PoolHeader(pool=pool, split=split, format=fmt)

    if valid:
        return coupled()
    return st.one_of(coupled(), messages(encoder_pb2.PoolHeader, {"pool": invalid_names()}))


@st.composite
def upload_streams(draw: st.DrawFn) -> list[Request]:
    """A header-first chunk stream cut at random points: a valid upload one time in eight,
    otherwise hostile (and sometimes out of protocol)."""
    if draw(st.integers(0, 7)) == 0:
        header = draw(headers(valid=True))
        return [encoder_pb2.IngestPoolChunk(header=header, data=draw(VALID_UPLOADS))]
    data = draw(payloads())
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=3)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    chunks: list[Request] = [encoder_pb2.IngestPoolChunk(data=p) for p in pieces]
    first = chunks[0]
    assert isinstance(first, encoder_pb2.IngestPoolChunk)
    if draw(st.integers(0, 9)):  # usually a header, as the protocol asks
        first.header.CopyFrom(draw(headers()))
    if draw(st.integers(0, 9)) == 0:  # a second header
        chunks.append(encoder_pb2.IngestPoolChunk(header=draw(headers())))
    if draw(st.integers(0, 9)) == 0:  # a chunk that is not a message at all
        chunks.insert(draw(st.integers(0, len(chunks))), draw(raw_bytes()))
    return chunks


# ------------------------------------------------------------------ the RPCs
REQUESTS: dict[str, Callable[[], Strategy]] = {
    "GetPool": lambda: one(
        requests_of(
            encoder_pb2.GetPoolRequest,
            st.builds(encoder_pb2.GetPoolRequest, pool=st.sampled_from(POOLS)),
            {"pool": names(POOLS)},
        )
    ),
    "ListVersions": lambda: one(
        requests_of(
            encoder_pb2.ListVersionsRequest,
            st.builds(
                encoder_pb2.ListVersionsRequest,
                pool=st.sampled_from(POOLS),
                include_incomplete=st.booleans(),
            ),
            {"pool": names(POOLS)},
        )
    ),
    "GetVersion": version_requests,
    "CompareVersions": lambda: one(
        requests_of(
            encoder_pb2.CompareVersionsRequest,
            st.builds(
                encoder_pb2.CompareVersionsRequest,
                pool=st.just("fuzz"),
                version_a=st.sampled_from(["v1", "v2"]),
                version_b=st.sampled_from(["v1", "v2"]),
                sample=st.sampled_from([0, 1, 5]),
                seed=ints(UINT64),
            ),
            {
                "pool": names(POOLS),
                "version_a": names(VERSIONS),
                "version_b": names(VERSIONS),
                "sample": ints(INT32, [0, 1, 5]),
            },
        )
    ),
    "EmbedPool": embed_requests,
    "RefreshFromCheckpoint": refresh_requests,
    "IngestPool": upload_streams,
    "PinVersion": version_requests,
    "UnpinVersion": version_requests,
    "DeleteVersion": version_requests,
    "CleanupVersions": lambda: one(
        requests_of(
            encoder_pb2.CleanupVersionsRequest,
            st.builds(
                encoder_pb2.CleanupVersionsRequest,
                pool=st.sampled_from(POOLS),
                keep_latest=st.sampled_from([0, 1, 2]),
            ),
            {
                "pool": excluding(names(), POOLS),
                "keep_latest": ints_outside(INT32, 0, 2**31 - 1, [-1]),
            },
            valid_one_in=20,  # a valid cleanup runs Lance's file cleanup
        )
    ),
}
# No checkpoint under the fuzz root is valid: a real refresh would load a model per call.
NEVER_OK = {"RefreshFromCheckpoint"}
PIN_RPCS = {"PinVersion", "UnpinVersion"}


def test_every_rpc_is_fuzzed() -> None:
    assert set(REQUESTS) == set(RPCS)


def _accepted(world: EncoderWorld, rpc: str) -> Callable[[Sequence[Request], Outcome], None]:
    """Checks of a successful call; accepted deletions in pool "fuzz" update `expected`."""

    def check(requests: Sequence[Request], outcome: Outcome) -> None:
        last = outcome.responses[-1]
        if rpc == "EmbedPool":
            assert last.version.status == "complete" and last.version.row_count == 2, last
        elif rpc == "IngestPool":
            assert last.pool == "ingest" and last.rows_added >= 1, last
        elif rpc == "DeleteVersion" and last.pool == "fuzz":
            world.expected["fuzz"] = [
                (name, "deleted" if name == last.version else status, table, rows, pinned)
                for name, status, table, rows, pinned in world.expected["fuzz"]
            ]
        elif rpc == "CleanupVersions":
            assert not set(last.removed) & {"v1", "v2"}, last  # pinned

    return check


@pytest.mark.parametrize("rpc", list(REQUESTS))
def test_hostile_requests_get_client_errors(encoder_world: EncoderWorld, rpc: str) -> None:
    ledger = fuzz_rpc(
        encoder_world.channel, RPCS[rpc], REQUESTS[rpc](), _accepted(encoder_world, rpc)
    )
    ledger.check(expect_ok=rpc not in NEVER_OK)
    assert_serving(encoder_world.channel, ["", SERVICE.full_name])
    store = encoder_world.store
    # Rejected requests changed nothing; accepted ones only what they said.
    now = snapshot(store, ["fuzz"])
    if rpc in PIN_RPCS:
        unpinned = {p: [v[:-1] for v in vs] for p, vs in now.items()}
        assert unpinned == {p: [v[:-1] for v in vs] for p, vs in encoder_world.expected.items()}
        encoder_world.repin()
    else:
        assert now == encoder_world.expected
    info = store.pool_info("fuzz")
    assert (info.rows, info.splits) == (12, FUZZ_ROWS)
    assert not [
        v for v in store.list_versions("tiny", include_incomplete=True) if v.status == "running"
    ]
    # A valid request still works, and the data it reads is intact.
    valid = encoder_pb2.VersionRequest(pool="fuzz", version="v1")
    outcome = invoke(encoder_world.channel, RPCS["GetVersion"], [valid])
    assert outcome.code is grpc.StatusCode.OK and outcome.responses[0].row_count == 12
    np.testing.assert_array_equal(store.read_embeddings("fuzz", "v1")[1], encoder_world.v1)
