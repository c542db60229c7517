"""gRPC clients for the encoder and proxy services: the orchestrator's only way in.

They translate between numpy/dataclasses (`engine.selectors`) and the protos;
nothing here knows about active learning. Errors from the services surface as
`grpc.RpcError` with the server's status code and message.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import numpy.typing as npt
from proxal.common.v1 import common_pb2
from proxal.encoder.v1 import encoder_pb2, encoder_pb2_grpc
from proxal.orchestrator_service.engine.selectors import (
    ClassifierSpec,
    Predictions,
    Selection,
    Subsampling,
    TrainingSet,
)
from proxal.orchestrator_service.sessions.pool_files import Fields, PoolFile, read_pool_file
from proxal.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from proxal.runtime.arrays import (
    pack_float32,
    pack_int32,
    pack_int64,
    unpack_float32,
    unpack_int32,
    unpack_int64,
)
from proxal.runtime.errors import InvalidArgumentError
from proxal.runtime.security import ClientSecurity
from proxal.runtime.server import grpc_channel_options

UPLOAD_CHUNK_BYTES = 1 << 20


# The channel's default service config: balance calls over every address the target
# resolves to, instead of gRPC's default pick_first (one connection, one server at a time).
ROUND_ROBIN_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})
# gRPC target schemes (resolvers) an address may start with.
_SCHEMES = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:", "xds:")
# Targets naming a gRPC resolver, which may resolve to several servers.
_RESOLVER_SCHEME = re.compile(r"^(dns|ipv4|ipv6):")


def check_address(address: str) -> str:
    """`address` if it can name a server: ``host:port`` with a numeric port, or a gRPC
    target with a scheme (``dns:///name:port``, ``ipv4:a:p,b:p``, ``unix:path``);
    InvalidArgumentError otherwise (gRPC would only log it and fail the first call)."""
    if not address or any(c.isspace() for c in address):
        raise InvalidArgumentError(f"server address {address!r} is not host:port")
    if address.startswith(_SCHEMES):
        return address  # a target with a scheme: gRPC's resolver checks the rest
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidArgumentError(
            f"server address {address!r} is not host:port (a port is a number 1-65535)"
        )
    return address


def open_channel(
    address: str, round_robin: bool = False, security: ClientSecurity | None = None
) -> grpc.Channel:
    """A channel with proxal's message-size limits, balanced round-robin if asked.

    TLS, client certificate and bearer token as `security` says, by default as the
    environment does (`ClientSecurity.from_env`: plaintext and no token when unset).
    InvalidArgumentError for an address that cannot name a server (`check_address`).
    """
    check_address(address)
    options: list[tuple[str, str | int]] = [*grpc_channel_options()]
    if round_robin:
        options.append(("grpc.service_config", ROUND_ROBIN_SERVICE_CONFIG))
    security = ClientSecurity.from_env() if security is None else security
    return security.channel(address, options)


def channel_target(addresses: Sequence[str]) -> str:
    """A gRPC target naming every replica: ``ipv4:h1:p1,h2:p2`` (or ``ipv6:``).

    One address is used as is, so a ``dns:///name:port`` that resolves to several replicas
    works too; several must be IP literals with ports.
    """
    if not addresses:
        raise InvalidArgumentError("need at least one replica address")
    if len(addresses) == 1:
        return addresses[0]
    families = set()
    for address in addresses:
        host, sep, port = address.rpartition(":")
        try:
            if not sep or not port.isdigit():
                raise ValueError(address)
            families.add(ipaddress.ip_address(host.strip("[]")).version)
        except ValueError:
            raise InvalidArgumentError(
                f"replica address {address!r} is not ip:port; list IP literals, or pass one "
                "dns:///name:port target that resolves to every replica"
            ) from None
    if len(families) > 1:
        raise InvalidArgumentError(
            f"replica addresses {','.join(addresses)!r} mix IPv4 and IPv6; use one family"
        )
    return f"ipv{families.pop()}:" + ",".join(addresses)


def proxy_target(address: str) -> tuple[str, bool]:
    """(gRPC target, balance round-robin?) for a proxy address as users write it.

    * ``host:port``: one server, as is, with gRPC's default pick_first (unchanged).
    * ``dns:///name:port``, ``ipv4:a:p1,b:p2``, ``ipv6:...``: as is, round-robin over every
      address the resolver returns (a headless Service or a compose service with replicas).
    * ``a:p1,b:p2`` (IP literals): becomes ``ipv4:a:p1,b:p2`` (or ``ipv6:``), round-robin.
    """
    address = address.strip()
    if not address:
        raise InvalidArgumentError("empty proxy address: pass host:port")
    if _RESOLVER_SCHEME.match(address):
        return address, True
    parts = [part.strip() for part in address.split(",") if part.strip()]
    if len(parts) > 1:
        return channel_target(parts), True
    return address, False


def selection_from_proto(response: proxy_pb2.SelectResponse) -> Selection:
    """A SelectResponse as a `Selection`."""
    t = response.timings
    return Selection(
        ids=unpack_int64(response.ids.data),
        scores=unpack_float32(response.scores.data),
        strategy=response.strategy,
        fallback_reason=response.fallback_reason,
        timings={
            "load_s": t.load_s,
            "fit_s": t.fit_s,
            "score_s": t.score_s,
            "select_s": t.select_s,
        },
        candidates=response.candidates,
        scored_ids=unpack_int64(response.scored_ids.data),
        scored_scores=unpack_float32(response.scored_scores.data),
        predicted_labels=unpack_int32(response.predicted_labels.data),
        predicted_probabilities=unpack_float32(response.predicted_probabilities.data),
    )


def training_proto(training: TrainingSet) -> proxy_pb2.TrainingSet:
    return proxy_pb2.TrainingSet(
        ids=common_pb2.Int64Array(data=pack_int64(training.ids)),
        labels=common_pb2.Int32Array(data=pack_int32(training.labels)),
        num_classes=training.num_classes,
    )


def classifier_proto(
    spec: ClassifierSpec | proxy_pb2.ClassifierSpec | None,
) -> proxy_pb2.ClassifierSpec | None:
    """The proto of a classifier spec (a proto passes through; None stays None)."""
    if spec is None or isinstance(spec, proxy_pb2.ClassifierSpec):
        return spec
    return proxy_pb2.ClassifierSpec(
        kind=spec.kind, c=spec.c, max_iter=spec.max_iter, balanced=spec.balanced
    )


def subsampling_proto(
    sub: Subsampling | proxy_pb2.Subsampling | None,
) -> proxy_pb2.Subsampling | None:
    """The proto of a UPS subsampling (a proto passes through; None stays None)."""
    if sub is None or isinstance(sub, proxy_pb2.Subsampling):
        return sub
    return proxy_pb2.Subsampling(
        gamma=sub.gamma,
        temperature=sub.temperature,
        previous_ids=common_pb2.Int64Array(data=pack_int64(sub.previous_ids)),
        previous_scores=common_pb2.Float32Array(data=pack_float32(sub.previous_scores)),
    )


def select_request(
    pool: str,
    version: str,
    training: TrainingSet,
    strategy: str,
    k: int,
    seed: int,
    candidate_ids: npt.NDArray[np.int64] | None = None,
    classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
    subsampling: Subsampling | proxy_pb2.Subsampling | None = None,
    return_scores: bool = False,
    mc_samples: int = 0,
    initial: str = "",
    class_balanced: bool = False,
) -> proxy_pb2.SelectRequest:
    """A SelectRequest; candidate_ids (c,) None or empty means every unlabeled id."""
    return proxy_pb2.SelectRequest(
        pool=pool,
        embedding_version=version,
        training=training_proto(training),
        classifier=classifier_proto(classifier),
        strategy=strategy,
        k=k,
        seed=seed,
        candidate_ids=common_pb2.Int64Array(
            data=b"" if candidate_ids is None else pack_int64(candidate_ids)
        ),
        subsampling=subsampling_proto(subsampling),
        return_scores=return_scores,
        mc_samples=mc_samples,
        initial=initial,
        class_balanced=class_balanced,
    )


def predict_request(
    pool: str,
    version: str,
    training: TrainingSet,
    ids: npt.NDArray[np.int64],
    seed: int,
    classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
    strategy: str = "",
) -> proxy_pb2.PredictRequest:
    """A PredictRequest for ids (n,); `strategy` also asks for their acquisition scores."""
    return proxy_pb2.PredictRequest(
        pool=pool,
        embedding_version=version,
        training=training_proto(training),
        classifier=classifier_proto(classifier),
        seed=seed,
        ids=common_pb2.Int64Array(data=pack_int64(ids)),
        strategy=strategy,
    )


def predictions_from(response: proxy_pb2.PredictResponse) -> Predictions:
    return Predictions(
        labels=unpack_int32(response.labels.data),
        probabilities=unpack_float32(response.confidence.data),
        scores=unpack_float32(response.scores.data),
    )


class EncoderClient:
    def __init__(self, address: str, timeout: float = 3600.0):
        self.address = address
        self.timeout = timeout
        self._channel = open_channel(address)
        self._stub = encoder_pb2_grpc.EncoderServiceStub(self._channel)

    def ingest_file(
        self, pool: str, split: str, path: Path, fmt: str = "", fields: Fields | None = None
    ) -> encoder_pb2.IngestPoolResponse:
        """Upload a pool file (`sessions.pool_files`: JSONL, JSON, CSV, TSV, Parquet or
        text, read and checked here first) as one split of a pool, in 1 MiB chunks."""
        return self.ingest(pool, split, read_pool_file(path, fmt, fields))

    def ingest(self, pool: str, split: str, rows: PoolFile) -> encoder_pb2.IngestPoolResponse:
        """Upload rows already read from a file, as JSONL, in 1 MiB chunks."""
        data = rows.to_jsonl()
        header = encoder_pb2.PoolHeader(
            pool=pool, split=split, format=encoder_pb2.FILE_FORMAT_JSONL
        )

        def chunks() -> Iterator[encoder_pb2.IngestPoolChunk]:
            yield encoder_pb2.IngestPoolChunk(header=header, data=data[:UPLOAD_CHUNK_BYTES])
            for start in range(UPLOAD_CHUNK_BYTES, len(data), UPLOAD_CHUNK_BYTES):
                yield encoder_pb2.IngestPoolChunk(data=data[start : start + UPLOAD_CHUNK_BYTES])

        return self._stub.IngestPool(chunks(), timeout=self.timeout)

    def embed(
        self,
        pool: str,
        backend: str = "",
        batch_size: int = 0,
        max_length: int = 0,
        on_progress: Callable[[encoder_pb2.EmbedProgress], None] | None = None,
        precision: str = "",
        model: str = "",
    ) -> common_pb2.EmbeddingVersion:
        """Embed a pool as a new version; `on_progress` sees every progress message."""
        request = encoder_pb2.EmbedPoolRequest(
            pool=pool,
            model=model,
            backend=backend,
            batch_size=batch_size,
            max_length=max_length,
            precision=precision,
        )
        stream = self._stub.EmbedPool(request, timeout=self.timeout)
        return self._final_version(stream, "EmbedPool", on_progress)

    def refresh(
        self,
        pool: str,
        checkpoint: str,
        label_count: int = 0,
        label_set_hash: str = "",
        max_length: int = 0,
        backend: str = "",
        on_progress: Callable[[encoder_pb2.EmbedProgress], None] | None = None,
    ) -> common_pb2.EmbeddingVersion:
        """Re-embed a pool from a checkpoint (a path under the encoder's --checkpoint-root)."""
        request = encoder_pb2.RefreshRequest(
            pool=pool,
            checkpoint=checkpoint,
            backend=backend,
            max_length=max_length,
            label_count=label_count,
            label_set_hash=label_set_hash,
        )
        stream = self._stub.RefreshFromCheckpoint(request, timeout=self.timeout)
        return self._final_version(stream, "RefreshFromCheckpoint", on_progress)

    def _final_version(
        self,
        stream: Iterable[encoder_pb2.EmbedProgress],
        rpc: str,
        on_progress: Callable[[encoder_pb2.EmbedProgress], None] | None,
    ) -> common_pb2.EmbeddingVersion:
        """Drain an embedding run's progress stream → the version its last message carries."""
        version = None
        for message in stream:
            if on_progress is not None:
                on_progress(message)
            if message.HasField("version"):
                version = message.version
        if version is None:
            raise RuntimeError(f"encoder at {self.address} ended {rpc} without a version")
        return version

    def list_versions(
        self, pool: str, include_incomplete: bool = False
    ) -> list[common_pb2.EmbeddingVersion]:
        response = self._stub.ListVersions(
            encoder_pb2.ListVersionsRequest(pool=pool, include_incomplete=include_incomplete)
        )
        return list(response.versions)

    def pin(self, pool: str, version: str) -> common_pb2.EmbeddingVersion:
        return self._stub.PinVersion(encoder_pb2.VersionRequest(pool=pool, version=version))

    def unpin(self, pool: str, version: str) -> common_pb2.EmbeddingVersion:
        return self._stub.UnpinVersion(encoder_pb2.VersionRequest(pool=pool, version=version))

    def delete(self, pool: str, version: str) -> None:
        self._stub.DeleteVersion(encoder_pb2.VersionRequest(pool=pool, version=version))

    def compare(
        self, pool: str, version_a: str, version_b: str, sample: int = 0
    ) -> encoder_pb2.CompareVersionsResponse:
        return self._stub.CompareVersions(
            encoder_pb2.CompareVersionsRequest(
                pool=pool, version_a=version_a, version_b=version_b, sample=sample
            )
        )

    def cleanup(self, pool: str, keep_latest: int) -> encoder_pb2.CleanupVersionsResponse:
        return self._stub.CleanupVersions(
            encoder_pb2.CleanupVersionsRequest(pool=pool, keep_latest=keep_latest)
        )

    def close(self) -> None:
        self._channel.close()


class ProxyClient:
    """Calls one proxy service, or spreads calls over replicas (see `proxy_target`).

    ``address`` is ``host:port`` (one replica, pick_first), or a ``dns:///name:port`` /
    ``ipv4:a:p1,b:p2`` target or a comma-separated list of ``ip:port``, balanced with the
    ``round_robin`` policy: each call goes to the next ready replica, and a replica that
    goes away drops out of the rotation (a call in flight on it fails UNAVAILABLE).
    """

    def __init__(self, address: str, timeout: float = 120.0):
        self.address = address
        self.timeout = timeout
        self.target, round_robin = proxy_target(address)
        self.load_balancing = "round_robin" if round_robin else "pick_first"
        self._channel = open_channel(self.target, round_robin)
        self._stub = proxy_pb2_grpc.ProxyServiceStub(self._channel)

    def select(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        strategy: str,
        k: int,
        seed: int,
        candidate_ids: npt.NDArray[np.int64] | None = None,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
        subsampling: Subsampling | proxy_pb2.Subsampling | None = None,
        return_scores: bool = False,
        mc_samples: int = 0,
        initial: str = "",
        class_balanced: bool = False,
    ) -> Selection:
        """The proxy's top k; `subsampling` (UPS), `return_scores`, `initial` and
        `class_balanced` as in proxy.proto."""
        request = select_request(
            pool,
            version,
            training,
            strategy,
            k,
            seed,
            candidate_ids=candidate_ids,
            classifier=classifier,
            subsampling=subsampling,
            return_scores=return_scores,
            mc_samples=mc_samples,
            initial=initial,
            class_balanced=class_balanced,
        )
        return selection_from_proto(self._stub.Select(request, timeout=self.timeout))

    def predict(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
    ) -> npt.NDArray[np.int32]:
        """The proxy's predicted class index for each id, (n,) int32."""
        return self.predictions(pool, version, training, ids, seed, classifier).labels

    def predictions(
        self,
        pool: str,
        version: str,
        training: TrainingSet,
        ids: npt.NDArray[np.int64],
        seed: int,
        classifier: ClassifierSpec | proxy_pb2.ClassifierSpec | None = None,
        strategy: str = "",
    ) -> Predictions:
        """Classes, probabilities and (with a pointwise `strategy`) scores of ids (n,)."""
        request = predict_request(pool, version, training, ids, seed, classifier, strategy)
        return predictions_from(self._stub.Predict(request, timeout=self.timeout))

    def close(self) -> None:
        self._channel.close()
