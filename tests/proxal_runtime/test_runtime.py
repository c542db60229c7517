"""The shared runtime: status mapping on a real gRPC server, packed arrays, names."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from proxal.runtime import errors
from proxal.runtime.arrays import pack_float32, pack_int64, unpack_float32, unpack_int64
from proxal.runtime.names import check_annotator, check_name, check_request_id
from proxal.runtime.server import (
    STATUS_BY_ERROR,
    ServerSettings,
    error_from_rpc,
    start_server,
)

RAISES = {
    "invalid": errors.InvalidArgumentError("k must be >= 1"),
    "missing": errors.NotFoundError("pool 'x' not found"),
    "state": errors.FailedPreconditionError("version is running"),
    "busy": errors.ResourceExhaustedError("too many"),
    "bug": ZeroDivisionError("division by zero"),
    "todo": NotImplementedError("Method not implemented!"),  # a generated servicer's stub
    "long": errors.InvalidArgumentError("x" * 100_000),  # e.g. a client's huge name echoed
}


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    def behaviour(kind: str):  # type: ignore[no-untyped-def]
        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            raise RAISES[kind]

        def stream(request: bytes, context: grpc.ServicerContext):  # type: ignore[no-untyped-def]
            yield b"first"
            raise RAISES[kind]

        return unary, stream

    handlers = {}
    for kind in RAISES:
        unary, stream = behaviour(kind)
        handlers[kind] = grpc.unary_unary_rpc_method_handler(unary)
        handlers[f"{kind}_stream"] = grpc.unary_stream_rpc_method_handler(stream)
    generic = grpc.method_handlers_generic_handler("test.Errors", handlers)
    running = start_server(
        ServerSettings(port=0), lambda s: s.add_generic_rpc_handlers([generic]), ["test.Errors"]
    )
    yield running
    running.stop(0)


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT),
        ("missing", grpc.StatusCode.NOT_FOUND),
        ("state", grpc.StatusCode.FAILED_PRECONDITION),
        ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("bug", grpc.StatusCode.INTERNAL),
        ("todo", grpc.StatusCode.UNIMPLEMENTED),
    ],
)
def test_errors_map_to_status_codes(server, kind: str, code: grpc.StatusCode) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.address) as channel:
        for method in (kind, f"{kind}_stream"):
            call = channel.unary_unary(f"/test.Errors/{method}") if method == kind else None
            with pytest.raises(grpc.RpcError) as info:
                if call is not None:
                    call(b"", timeout=5)
                else:
                    list(channel.unary_stream(f"/test.Errors/{method}")(b"", timeout=5))
            assert info.value.code() == code
            assert str(RAISES[kind]) in info.value.details()
        # the server is still healthy after the errors
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_reverse_mapping_round_trips(server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.address) as channel:
        for kind in ("invalid", "missing", "state"):
            with pytest.raises(grpc.RpcError) as info:
                channel.unary_unary(f"/test.Errors/{kind}")(b"", timeout=5)
            mapped = error_from_rpc(info.value, "proxy service")
            assert type(mapped) is type(RAISES[kind])
            assert STATUS_BY_ERROR[type(mapped)] == info.value.code()
            assert str(mapped).startswith("proxy service: ")


def test_packed_arrays_round_trip_and_reject_ragged_bytes() -> None:
    ids = np.array([0, 2**40, -1], dtype=np.int64)
    assert unpack_int64(pack_int64(ids)).tolist() == ids.tolist()
    scores = np.array([0.5, -1.25], dtype=np.float32)
    assert unpack_float32(pack_float32(scores)).tolist() == [0.5, -1.25]
    with pytest.raises(errors.InvalidArgumentError, match="candidate_ids: 7 bytes"):
        unpack_int64(b"\x00" * 7, "candidate_ids")


@pytest.mark.parametrize("name", ["", "../x", "/abs", "A", "a b", "a'b", "x" * 65, "pool\n"])
def test_bad_names_are_rejected(name: str) -> None:
    with pytest.raises(errors.InvalidArgumentError):
        check_name("pool", name)


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (check_annotator, ["ann", "a.b@c-d_e", "X" * 64], ["", "a b", "x" * 65, "ann\n", "é"]),
        (check_request_id, ["0f3a-uuid", "a:b.c_d"], ["", "a/b", "x" * 129, "id\n", "a b"]),
    ],
)
def test_annotators_and_request_ids(
    check: Callable[[str], str], good: list[str], bad: list[str]
) -> None:
    assert [check(x) for x in good] == good
    for value in bad:
        with pytest.raises(errors.InvalidArgumentError, match="is invalid"):
            check(value)


def test_good_names_pass() -> None:
    assert check_name("pool", "banking77_v2-test") == "banking77_v2-test"


def test_reflection_lists_the_services(server) -> None:  # type: ignore[no-untyped-def]
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(server.address) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {
        "test.Errors",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services


def test_store_options_from_flags_and_environment() -> None:
    import argparse

    from proxal.runtime.settings import add_common_args, store_options

    def parse(argv: list[str], env: dict[str, str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        add_common_args(parser, "PROXAL_TEST", env)
        return parser.parse_args(argv)

    args = parse(["--store-option", "aws_region=us-east-1", "--store-option=allow_http=true"], {})
    assert store_options(args) == {"aws_region": "us-east-1", "allow_http": "true"}
    env = {"PROXAL_STORE_OPTIONS": "aws_endpoint=http://127.0.0.1:9000,allow_http=true"}
    assert store_options(parse([], env)) == {
        "aws_endpoint": "http://127.0.0.1:9000",
        "allow_http": "true",
    }
    assert store_options(parse([], {})) is None
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        store_options(parse(["--store-option", "novalue"], {}))


def test_bytes_that_do_not_parse_are_invalid_argument(server) -> None:  # type: ignore[no-untyped-def]
    garbage = b"\xff\xff\xff\xff"  # not a protobuf message of any type
    with grpc.insecure_channel(server.address) as channel:
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/grpc.health.v1.Health/Check")(garbage, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid grpc.health.v1.HealthCheckRequest message" in info.value.details()
        stream = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        )
        with pytest.raises(grpc.RpcError) as info:
            list(stream(iter([garbage]), timeout=5))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_long_messages_are_cut_to_fit_a_trailer(server) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as info:
        channel.unary_unary("/test.Errors/long")(b"", timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().endswith("... (100000 characters in all)")
    assert len(info.value.details()) < 2100
