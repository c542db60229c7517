"""Hostile-input fuzzing of proxal's gRPC services: strategies, calls, and the verdict.

Every RPC of a service is described by its method descriptor (`rpcs`), so one `invoke`
calls any of them with generated messages or with raw bytes that may not parse at all.
`messages` builds a hypothesis strategy for any request message from its descriptor:
hostile values by field type (huge and empty strings and bytes, NaN and infinities, edge
integers, unknown enum values, packed arrays of the wrong length), with per-field
overrides that mix in the few values that reach the service's deeper code (known pools,
versions and ids). A `Ledger` records every outcome; a client mistake must get a status
that says so (`CLIENT_ERRORS`), never INTERNAL or UNKNOWN, a timeout or a dead server.

Adding a service: start it on loopback port 0, write the overrides of its requests, and
run `fuzz_rpc` per method (see test_fuzz_encoder.py and test_fuzz_proxy.py).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor, message_factory
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxal.runtime.arrays import pack_float32, pack_int32, pack_int64

Field: TypeAlias = descriptor.FieldDescriptor
Strategy: TypeAlias = st.SearchStrategy[Any]
Request: TypeAlias = Message | bytes
M = TypeVar("M", bound=Message)

# Generated requests per RPC: the minimum; PROXAL_FUZZ_EXAMPLES runs more (or fewer).
EXAMPLES = int(os.environ.get("PROXAL_FUZZ_EXAMPLES", "1000"))
CALL_TIMEOUT_S = 60.0  # a call that needs longer counts as a hang
CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
# An error message too long for the status details reaches the client as this instead.
METADATA_OVERFLOW = "metadata size exceeds"
SHOWN_OFFENDERS = 20
SHOWN_CHARS = 120

# Reproducible in CI: the same examples every run, no example database on disk.
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")  # fullmatch: "$" would allow a final "\n"
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
TRICKY_TEXT = [
    "",
    " ",
    "\t\n",
    "..",
    "../../etc/passwd",
    "/etc/passwd",
    "a/b",
    "a\x00b",
    "C:\\Windows",
    "' OR '1'='1",
    "pool' OR pool != '",
    "%s%n%x",
    "\u202egnp.exe",
    "Ünïcödé",
    "名前",
    "\U0001f916",
    "\ufeffbom",
    "a" * 65,
    "-leading-dash",
    "UPPER",
]


# ------------------------------------------------------------------ primitive strategies
def huge_text(max_repeat: int = 300_000) -> Strategy:
    """Very long strings, built by repetition (cheap for hypothesis to generate)."""
    return st.builds(
        lambda unit, n: unit * n,
        st.sampled_from(["a", "é", "\U0001f600", "/", "\x00", "ab,\n"]),
        st.integers(1_000, max_repeat),
    )


def hostile_text() -> Strategy:
    """Strings a careless or malicious client sends: tricky, random unicode, or huge."""
    return st.one_of(st.sampled_from(TRICKY_TEXT), st.text(max_size=30), huge_text())


def invalid_names() -> Strategy:
    """Strings that are never a valid pool/split/version name."""
    return hostile_text().filter(lambda s: not NAME.fullmatch(s))


def names(known: Sequence[str] = ()) -> Strategy:
    """Known names, valid-shaped unknown ones, and invalid ones."""
    unknown = st.one_of(st.from_regex(NAME, fullmatch=True), invalid_names())
    return st.one_of(st.sampled_from(list(known)), unknown) if known else unknown


def choices(valid: Sequence[Any], hostile: Strategy) -> Strategy:
    """`valid` values (the ones that reach deeper code) mixed with `hostile` ones."""
    return st.one_of(st.sampled_from(list(valid)), hostile)


def ints(bounds: tuple[int, int], valid: Sequence[int] = ()) -> Strategy:
    """Integers of a wire type: edges, anything in range, and `valid` ones."""
    low, high = bounds
    edges = sorted(v for v in {low, low + 1, -1, 0, 1, high - 1, high} if low <= v <= high)
    return st.one_of(
        st.sampled_from(list(valid) or [0]), st.sampled_from(edges), st.integers(low, high)
    )


def ints_outside(bounds: tuple[int, int], low: int, high: int, valid: Sequence[int]) -> Strategy:
    """`valid` integers or ones of the wire type outside [low, high] (bounded-cost fields)."""
    lo, hi = bounds
    sides = [st.integers(a, b) for a, b in ((lo, low - 1), (high + 1, hi)) if a <= b]
    return st.one_of(st.sampled_from(list(valid)), *sides)


def doubles(valid: Sequence[float] = ()) -> Strategy:
    """Any float64 including NaN, infinities, -0.0 and subnormals."""
    special = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 5e-324, 1e308, -1e308])
    return st.one_of(st.sampled_from(list(valid) or [0.0]), special, st.floats())


def _packed(pack: Callable[[Any], bytes], values: Strategy, big: Strategy) -> Strategy:
    """Packed arrays: short lists of `values`, `big` arrays, and bytes of any length."""
    return st.one_of(
        st.lists(values, max_size=40).map(pack),
        big.map(pack),
        st.binary(max_size=40),
    )


def int64_arrays(known: Sequence[int], huge: int = 600_000) -> Strategy:
    """Packed int64 ids: known ids, unknown and extreme ones, duplicates, up to `huge` ids."""
    values = st.one_of(st.sampled_from(list(known)), ints(INT64))
    big = st.builds(  # consecutive ids from `start`, each once or twice
        lambda n, start, times: np.arange(start, start + n).repeat(times),
        st.integers(1_000, huge),
        st.sampled_from([0, -(2**40), 2**62]),
        st.integers(1, 2),
    )
    return _packed(pack_int64, values, big)


def int32_arrays(known: Sequence[int], huge: int = 600_000) -> Strategy:
    """Packed int32 values (labels): known ones, extremes, and long arrays."""
    values = st.one_of(st.sampled_from(list(known)), ints(INT32))
    big = st.builds(
        lambda n, v: np.full(n, v), st.integers(1_000, huge), st.sampled_from([0, 1, -1])
    )
    return _packed(pack_int32, values, big)


def float32_arrays(huge: int = 600_000) -> Strategy:
    """Packed float32 values: NaN, infinities, ordinary numbers, long arrays."""
    values = st.floats(width=32, allow_nan=True, allow_infinity=True)
    big = st.builds(
        lambda n, v: np.full(n, v), st.integers(1_000, huge), st.sampled_from([0.5, math.nan])
    )
    return _packed(pack_float32, values, big)


# ------------------------------------------------------------------ message strategies
def _scalar(f: Field) -> Strategy:
    """A hostile value for a scalar field, by wire type."""
    t = f.type
    if t == Field.TYPE_STRING:
        return hostile_text()
    if t == Field.TYPE_BYTES:
        return st.one_of(
            st.binary(max_size=64), st.builds(lambda n: b"\xff" * n, st.integers(1_000, 2_000_000))
        )
    if t == Field.TYPE_BOOL:
        return st.booleans()
    if t in (Field.TYPE_DOUBLE, Field.TYPE_FLOAT):
        return doubles()
    if t == Field.TYPE_ENUM:  # proto3 enums are open: unknown numbers parse fine
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), ints(INT32))
    if t in (Field.TYPE_INT32, Field.TYPE_SINT32, Field.TYPE_SFIXED32):
        return ints(INT32)
    if t in (Field.TYPE_UINT32, Field.TYPE_FIXED32):
        return ints((0, 2**32 - 1))
    if t in (Field.TYPE_UINT64, Field.TYPE_FIXED64):
        return ints(UINT64)
    return ints(INT64)


def message_class(desc: descriptor.Descriptor) -> type[Message]:
    return message_factory.GetMessageClass(desc)


def _as_field(name: str) -> Callable[[Any], dict[str, Any]]:
    return lambda value: {name: value}


def messages(
    cls: type[Message] | descriptor.Descriptor,
    overrides: Mapping[str, Strategy] | None = None,
    prefix: str = "",
) -> Strategy:
    """Messages of `cls` with every field optional and hostile by type.

    `overrides` maps dotted field paths ("training.ids.data") to the strategy of that
    field's value; a path naming a message field replaces its generation entirely. A oneof
    sets at most one of its fields.
    """
    desc = cls if isinstance(cls, descriptor.Descriptor) else cls.DESCRIPTOR
    target = message_class(desc)
    overrides = overrides or {}
    plain: dict[str, Strategy] = {}
    oneofs: list[Strategy] = []
    for f in desc.fields:
        path = prefix + f.name
        if path in overrides:
            value = overrides[path]
        elif f.type == Field.TYPE_MESSAGE:
            value = messages(f.message_type, overrides, path + ".")
        else:
            value = _scalar(f)
        if f.is_repeated:
            value = st.lists(value, max_size=4)
        if f.containing_oneof is None:
            plain[f.name] = value
        else:
            oneofs.append(value.map(_as_field(f.name)))
    chosen = st.one_of(st.just({}), *oneofs) if oneofs else st.just({})
    return st.builds(
        lambda fields, extra: target(**fields, **extra),
        st.fixed_dictionaries({}, optional=plain),
        chosen,
    )


def _leaves(
    desc: descriptor.Descriptor, overrides: Mapping[str, Strategy], prefix: str = ""
) -> dict[str, Strategy]:
    """Every field path a mutation may set (scalars and overridden paths), with its strategy."""
    found: dict[str, Strategy] = {}
    for f in desc.fields:
        path = prefix + f.name
        if path in overrides:
            found[path] = overrides[path]
        elif f.type == Field.TYPE_MESSAGE:
            found.update(_leaves(f.message_type, overrides, path + "."))
        else:
            found[path] = _scalar(f)
        if f.is_repeated and path in found:
            found[path] = st.lists(found[path], max_size=4)
    return found


def _set(message: Message, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for parent in parents:
        message = getattr(message, parent)
    f = message.DESCRIPTOR.fields_by_name[name]
    if f.is_repeated:
        del getattr(message, name)[:]
        getattr(message, name).extend(value)
    elif f.type == Field.TYPE_MESSAGE:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def mutants(
    valid: Strategy,
    cls: type[Message],
    overrides: Mapping[str, Strategy] | None = None,
    changes: tuple[int, int] = (0, 2),
) -> Strategy:
    """`valid` requests with `changes` (min, max) fields replaced by hostile values.

    Most generated requests fail on their first bad field; a valid request with one field
    changed reaches the checks (and the work) behind the others.
    """
    paths = _leaves(cls.DESCRIPTOR, overrides or {})

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        message = cls()
        message.CopyFrom(draw(valid))
        low, high = changes
        chosen = draw(
            st.lists(st.sampled_from(sorted(paths)), min_size=low, max_size=high, unique=True)
        )
        for path in chosen:
            _set(message, path, draw(paths[path]))
        return message

    return build()


def requests_of(
    cls: type[Message],
    valid: Strategy,
    overrides: Mapping[str, Strategy] | None = None,
    valid_one_in: int | None = None,
) -> Strategy:
    """A request strategy for one RPC: mutants of valid requests, hostile messages built
    from scratch, and raw bytes.

    For RPCs whose valid requests are costly (they embed, or change the store), pass
    `valid_one_in`: valid requests then come once in that many, and every mutant changes
    at least one field, so `overrides` must generate invalid values only.
    """
    changes = (0, 2) if valid_one_in is None else (1, 2)
    hostile = st.one_of(mutants(valid, cls, overrides, changes), messages(cls, overrides))
    return or_raw(hostile if valid_one_in is None else sometimes(valid, hostile, valid_one_in))


def sometimes(rare: Strategy, usual: Strategy, one_in: int) -> Strategy:
    """`rare` once in `one_in` draws, else `usual`."""
    return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else usual)


def excluding(strategy: Strategy, values: Sequence[Any]) -> Strategy:
    """`strategy` without `values` (for fields that must stay invalid)."""
    return strategy.filter(lambda v: v not in values)


def raw_bytes() -> Strategy:
    """Bytes sent as a request without parsing: garbage, truncated varints, bad UTF-8."""
    return st.one_of(
        st.binary(max_size=64),
        st.sampled_from(
            [b"\xff", b"\x08", b"\x0a\x05ab", b"\x0a\x02\xff\xfe", b"\x12\x80\x80\x80\x80\x10"]
        ),
        st.builds(lambda n: b"\x0a" + b"\xff" * n, st.integers(100, 100_000)),
    )


def or_raw(requests: Strategy, raw_one_in: int = 8) -> Strategy:
    """`requests`, and once in `raw_one_in` raw bytes that may not parse."""
    return sometimes(raw_bytes(), requests, raw_one_in)


# ------------------------------------------------------------------ calling any RPC
@dataclass(frozen=True)
class Rpc:
    """One method of a gRPC service, callable with messages or raw bytes."""

    method: descriptor.MethodDescriptor

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        return message_class(self.method.input_type)

    @property
    def response_class(self) -> type[Message]:
        return message_class(self.method.output_type)

    @property
    def streams_requests(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def streams_responses(self) -> bool:
        return bool(self.method.server_streaming)


def rpcs(service: descriptor.ServiceDescriptor) -> dict[str, Rpc]:
    return {m.name: Rpc(m) for m in service.methods}


@dataclass(frozen=True)
class Outcome:
    """How one call ended, with the responses received before that."""

    code: grpc.StatusCode
    details: str
    responses: list[Message] = field(default_factory=list)


def _serialize(request: Request) -> bytes:
    return request if isinstance(request, bytes) else request.SerializeToString()


def invoke(
    channel: grpc.Channel, rpc: Rpc, requests: Sequence[Request], timeout: float = CALL_TIMEOUT_S
) -> Outcome:
    """Call `rpc` with `requests` (exactly one unless it streams requests)."""
    options = {
        "request_serializer": _serialize,
        "response_deserializer": rpc.response_class.FromString,
    }
    responses: list[Message] = []
    try:
        if rpc.streams_requests and rpc.streams_responses:
            call = channel.stream_stream(rpc.path, **options)
            responses.extend(call(iter(requests), timeout=timeout))
        elif rpc.streams_requests:
            responses.append(
                channel.stream_unary(rpc.path, **options)(iter(requests), timeout=timeout)
            )
        elif rpc.streams_responses:
            (request,) = requests
            responses.extend(channel.unary_stream(rpc.path, **options)(request, timeout=timeout))
        else:
            (request,) = requests
            responses.append(channel.unary_unary(rpc.path, **options)(request, timeout=timeout))
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return Outcome(exc.code(), exc.details() or "", responses)
    return Outcome(grpc.StatusCode.OK, "", responses)


def parsed(request: Request, cls: type[M]) -> M:
    """`request` as a message of `cls` (raw bytes that reached the server parsed)."""
    return cls.FromString(request if isinstance(request, bytes) else request.SerializeToString())


# ------------------------------------------------------------------ the verdict
def describe(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A short, readable rendering of a request (long strings and bytes abbreviated)."""
    if isinstance(value, bytes | str):
        text = repr(value[:limit])
        return text if len(value) <= limit else f"{text}...({len(value)} total)"
    if isinstance(value, Message):
        parts = []
        for f, v in value.ListFields():
            shown = [describe(x, limit) for x in v] if f.is_repeated else describe(v, limit)
            parts.append(f"{f.name}={shown}")
        return f"{type(value).__name__}({', '.join(parts)})"
    return repr(value)


@dataclass
class Ledger:
    """Outcomes of one RPC's fuzzing: status counts and the calls that broke the contract."""

    rpc: Rpc
    codes: Counter[str] = field(default_factory=Counter)
    offenders: list[str] = field(default_factory=list)

    def record(self, requests: Sequence[Request], outcome: Outcome) -> None:
        self.codes[outcome.code.name] += 1
        lost_message = METADATA_OVERFLOW in outcome.details
        if outcome.code in CLIENT_ERRORS and not lost_message:
            return
        self.offenders.append(
            f"{outcome.code.name}: {outcome.details[:300]}\n    "
            + "\n    ".join(describe(r) for r in requests)
        )

    def check(self, expect_ok: bool = True) -> None:
        """Fail listing the offending calls; with `expect_ok`, also if none succeeded (the
        strategies no longer reach the RPC's real work)."""
        summary = f"{self.rpc.name}: {dict(self.codes)}"
        print(summary)  # shown with -rP: how often each status came back
        if self.offenders:
            shown = "\n".join(self.offenders[:SHOWN_OFFENDERS])
            pytest.fail(
                f"{len(self.offenders)} call(s) got a status that is not a client error "
                f"({summary}):\n{shown}",
                pytrace=False,
            )
        if expect_ok:
            assert self.codes["OK"], f"no generated request succeeded: {summary}"


def fuzz_rpc(
    channel: grpc.Channel,
    rpc: Rpc,
    requests: Strategy,
    check_ok: Callable[[Sequence[Request], Outcome], None] | None = None,
) -> Ledger:
    """Call `rpc` once per generated request list (FUZZ_SETTINGS examples); the ledger.

    `requests` draws lists of requests (one element unless the RPC streams requests).
    `check_ok(requests, outcome)` may assert more about successful calls.
    """
    ledger = Ledger(rpc)

    @FUZZ_SETTINGS
    @given(requests)
    def run(drawn: list[Request]) -> None:
        outcome = invoke(channel, rpc, drawn)
        ledger.record(drawn, outcome)
        if check_ok is not None and outcome.code is grpc.StatusCode.OK:
            check_ok(drawn, outcome)

    run()
    return ledger


def one(requests: Strategy) -> Strategy:
    """A single request as the one-element list `fuzz_rpc` expects."""
    return requests.map(lambda r: [r])


def assert_serving(channel: grpc.Channel, services: Iterable[str] = ("",)) -> None:
    """The server answers its health check with SERVING (for every one of `services`)."""
    stub = health_pb2_grpc.HealthStub(channel)
    for service in services:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING, (service, status)
