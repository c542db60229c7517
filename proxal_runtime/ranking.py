"""Seeded ranking that depends on ids, not positions, so sharded selections merge exactly.

A selection orders candidates by (score descending, tie key ascending) where the tie key is
a hash of (seed, id). Because neither part depends on where a candidate sits in the array,
the top k of a pool equals the top k of the union of each shard's top k: the proxy and the
orchestrator's fan-out client both use `top_k` and get the same answer, given the same
scores for the same rows (the proxy's strategies make the scores of the top k independent
of chunking: see `proxal.proxy_service.strategies.PointwiseStrategy.settle`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def id_hash(ids: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.uint64]:
    """splitmix64 of each id mixed with `seed`: ids (n,) -> (n,) uint64, uniform bits."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed % 2**64) * _GOLDEN + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def id_uniform(ids: npt.NDArray[np.int64], seed: int) -> npt.NDArray[np.float32]:
    """A uniform number in [0, 1) per id, a pure function of (seed, id): (n,) float32."""
    return ((id_hash(ids, seed) >> np.uint64(40)).astype(np.float32)) * np.float32(2.0**-24)


def top_k(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int, seed: int
) -> npt.NDArray[np.intp]:
    """Positions of the k best of scores (n,), best first; 1 <= k <= n.

    Order: higher score first, equal scores by id_hash(ids, seed) ascending. NaN scores rank
    last. Runs in O(n) plus O(t log t) for the t candidates tied at the k-th score.
    """
    if not 1 <= k <= len(scores):
        raise ValueError(f"k must be in [1, {len(scores)}], got {k}")
    keys = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32, copy=False)
    kth = np.partition(keys, len(keys) - k)[len(keys) - k]
    contenders = np.flatnonzero(keys >= kth)
    order = np.lexsort((id_hash(ids[contenders], seed), -keys[contenders]))
    return contenders[order[:k]]
