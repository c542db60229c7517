"""The scoring kernel: least confidence, margin and entropy of a linear proxy in one pass.

A logistic-regression proxy scores a row x (d,) from its logits z = W x + b (s seen
classes). `LinearScorer` computes them for a block of rows with a fused numba loop that
reads each row once (s dot products from L1), writes them into a reused (s, b) float32
buffer, and turns them into scores on that small buffer in place with numpy's vector exp
and log. Rows may be float32 or float16: a float16 value is widened to float32 in the
loop (LLVM's exact fpext: vcvtph2ps on x86 with F16C), and every product and sum is
float32.

`scan` runs the kernel over a pool's candidates in cache-sized blocks on a few threads and
keeps, per block, only the candidates that could still reach the top k given a per-row
bound on their score's error, so a Select needs no pass over all m scores afterwards (all
scores are still written when asked for: UPS and return_scores). The survivors are then
scored again exactly, one row at a time from float32 rows (see strategies.ProbaStrategy).

Why numba, not BLAS: with 4 classes BLAS's gemm spends its time packing the rows and a
gemv per class reads each block 4 times; numpy cannot widen float16 at memory speed on an
AVX2 CPU (~0.6 G values/s), and BLAS has no float16 product there. Figures in
docs/proxy.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from llvmlite import ir as llvm_ir
from numba.extending import intrinsic

Matrix = npt.NDArray[np.float32]
Scores = npt.NDArray[np.float32]
Rows = npt.NDArray[np.intp]

KINDS = ("least_confidence", "margin", "entropy")
BLOCK_ROWS = 16_384  # rows per block: a (s, 16384) logit buffer, 256 KiB at 4 classes
F16_EPS = 2.0**-11  # float16 unit roundoff (round to nearest)
F16_SUBNORMAL_ERR = 2.0**-25  # half the spacing of float16 subnormals: absolute error
F32_EPS = 2.0**-24
PRUNE_AT = 4  # a thread prunes its survivors once they exceed PRUNE_AT * k


@numba.njit(nogil=True, fastmath=True, cache=True)
def _logits32(x: Matrix, wt: Matrix, bias: Scores, out: Matrix) -> None:  # pragma: no cover
    """out[c, i] = x[i] . wt[c] + bias[c] for x (n, d), wt (s, d), out (s, >= n)."""
    n, d = x.shape
    for i in range(n):
        for c in range(wt.shape[0]):
            acc = np.float32(0.0)
            for j in range(d):
                acc += x[i, j] * wt[c, j]
            out[c, i] = acc + bias[c]


@intrinsic
def _half_to_float(typingctx: Any, bits: Any) -> Any:  # pragma: no cover (compiled)
    """float16 bits (uint16) -> float32, exactly: LLVM's fpext, F16C's vcvtph2ps on x86."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.fpext(builder.bitcast(args[0], llvm_ir.HalfType()), llvm_ir.FloatType())

    return numba.types.float32(numba.types.uint16), codegen


@numba.njit(nogil=True, fastmath=True, cache=True)
def _logits16(
    h: npt.NDArray[np.uint16], wt: Matrix, bias: Scores, out: Matrix
) -> None:  # pragma: no cover
    """As _logits32 for float16 rows h (n, d) given as their bits, widened in the loop."""
    n, d = h.shape
    for i in range(n):
        for c in range(wt.shape[0]):
            acc = np.float32(0.0)
            for j in range(d):
                acc += _half_to_float(h[i, j]) * wt[c, j]  # type: ignore[call-arg]
            out[c, i] = acc + bias[c]


def scores_from_logits(kind: str, z: Matrix) -> Scores:
    """Scores (b,) from logits z (s, b), overwriting z: higher = more uncertain.

    least confidence 1 - max p, margin p2 - p1, entropy -sum p log p, with p the softmax
    over the s rows (classes the model never saw have p = 0 and change none of them).
    """
    z -= np.maximum.reduce(z, axis=0)
    np.exp(z, out=z)
    total = np.add.reduce(z, axis=0)
    if kind == "least_confidence":
        return (1.0 - 1.0 / total).astype(np.float32)
    if kind == "margin":
        z /= total
        top2 = np.partition(z, len(z) - 2, axis=0)[-2:]
        return (top2[0] - top2[1]).astype(np.float32)
    z /= total
    logs = np.log(np.maximum(z, np.finfo(np.float32).tiny))
    logs *= z
    return (-np.add.reduce(logs, axis=0)).astype(np.float32)


@dataclass(frozen=True)
class LinearScorer:
    """One uncertainty score of the linear proxy z = coef x + intercept, block by block.

    ``coef`` (s, d) and ``intercept`` (s,) float32 over the s seen classes; ``kind`` one of
    KINDS. Calling it on rows (b, d), float32 or float16, gives scores (b,) float32.
    """

    coef: Matrix
    intercept: Scores
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kernel score {self.kind!r}; valid: {', '.join(KINDS)}")

    def logits(self, x: npt.NDArray[np.float32 | np.float16], out: Matrix) -> Matrix:
        """Logits (s, b) of rows x (b, d) written into out (s, >= b); returns that view."""
        x = np.ascontiguousarray(x)
        if x.dtype == np.float16:
            _logits16(x.view(np.uint16), self.coef, self.intercept, out)
        else:
            _logits32(np.ascontiguousarray(x, dtype=np.float32), self.coef, self.intercept, out)
        return out[:, : len(x)]

    def __call__(self, x: npt.NDArray[np.float32 | np.float16]) -> Scores:
        out = np.empty((len(self.coef), max(len(x), 1)), dtype=np.float32)
        return scores_from_logits(self.kind, self.logits(x, out))

    def sensitivity(self) -> float:
        """L such that |score(z) - score(z')| <= L max_c |z_c - z'_c| (mean value theorem).

        The gradient's L1 norm: 2 p (1 - p) <= 1/2 for max p (least confidence), twice that
        for p1 - p2 (margin), sum_c p_c |log p_c + H| <= 2 H <= 2 log s for entropy.
        """
        if self.kind == "least_confidence":
            return 0.5
        if self.kind == "margin":
            return 1.0
        return 2.0 * math.log(len(self.coef))

    def rounding_slack(self) -> float:
        """A bound on the float32 rounding of the score formula itself (exp, sums, log)."""
        return 64.0 * len(self.coef) * F32_EPS * max(1.0, math.log(len(self.coef)))


@dataclass(frozen=True)
class Float16Error:
    """A bound on |score from a float16 row - score from its float32 row|, per row.

    A float16 row differs from x by at most F16_EPS |x_j| + 2^-25 per value, so ||dx|| <=
    F16_EPS ||x|| + 2^-25 sqrt(d); each logit moves by at most ||w_c|| ||dx||, plus the
    float32 accumulation of both computations (gamma_d ||x|| ||w_c||, in any summation
    order) and their bias adds (F32_EPS |z| each). The score moves by at most the scorer's
    sensitivity times the largest logit move, plus both scores' rounding slack. Built with
    `of`; called with the float32 rows' norms (n,), it gives the bounds (n,).
    """

    per_norm: float
    fixed: float
    slack: float

    @classmethod
    def of(cls, scorer: LinearScorer, dim: int) -> Float16Error:
        w_norm = float(np.sqrt((scorer.coef.astype(np.float64) ** 2).sum(axis=1)).max())
        bias = float(np.abs(scorer.intercept).max(initial=0.0))
        gamma = dim * F32_EPS / (1 - dim * F32_EPS)
        per_norm = w_norm * (F16_EPS + gamma * (2 + F16_EPS) + 2 * F32_EPS * (1 + F16_EPS))
        fixed = w_norm * F16_SUBNORMAL_ERR * math.sqrt(dim) + 2 * F32_EPS * bias
        scale = scorer.sensitivity() * (1 + 1e-6)
        return cls(per_norm * scale, fixed * scale, 2 * scorer.rounding_slack())

    def __call__(self, norms: Scores) -> Scores:
        return (norms * np.float32(self.per_norm) + np.float32(self.fixed + self.slack)).astype(
            np.float32
        )


@dataclass(frozen=True)
class Survivors:
    """Candidates that may reach the top k: positions (c,) into the pool's candidates, their
    scores (c,) as scanned and each score's error bound (c,); all (m,) scores or None."""

    positions: Rows
    scores: Scores
    bounds: Scores
    all_scores: Scores | None


def prune(
    positions: Rows, scores: Scores, bounds: Scores, k: int
) -> tuple[Rows, Scores, Scores, float]:
    """Keep the rows whose score could still be in the top k: score + bound >= L, L the
    k-th largest of score - bound (k rows are surely at least L). Returns them and L."""
    if len(scores) <= k:
        return positions, scores, bounds, -math.inf
    low = scores - bounds
    floor = float(np.partition(low, len(low) - k)[len(low) - k])
    keep = scores + bounds >= floor
    return positions[keep], scores[keep], bounds[keep], floor


def scan(
    matrix: npt.NDArray[np.float32 | np.float16],
    rows: Rows,
    scorer: LinearScorer,
    k: int,
    bound: Callable[[Rows, Scores], Scores],
    threads: int = 1,
    keep_all: bool = False,
) -> Survivors:
    """Score the candidate rows (m,) ascending of matrix (N, d) in blocks, keeping survivors.

    ``bound(rows, scores)`` gives each scanned score's error bound. A block whose rows are
    nearly contiguous is read as a slice (no copy), else gathered. Blocks are split over
    ``threads`` threads in contiguous runs; each keeps its own survivors, merged at the end.
    NaN scores never survive (they rank last). 1 <= k <= m.
    """
    starts = list(range(0, len(rows), BLOCK_ROWS))
    all_scores = np.empty(len(rows), dtype=np.float32) if keep_all else None
    runs = np.array_split(np.array(starts, dtype=np.intp), max(1, min(threads, len(starts))))

    def run(run_starts: npt.NDArray[np.intp]) -> tuple[Rows, Scores, Scores]:
        out = np.empty((len(scorer.coef), BLOCK_ROWS + BLOCK_ROWS // 4), dtype=np.float32)
        kept: list[tuple[Rows, Scores, Scores]] = []
        count, floor = 0, -math.inf
        for start in run_starts.tolist():
            block = rows[start : start + BLOCK_ROWS]
            lo, hi = int(block[0]), int(block[-1]) + 1
            if hi - lo == len(block):  # every row a candidate: no copy
                z = scorer.logits(matrix[lo:hi], out)
            elif hi - lo <= len(block) + len(block) // 4:
                z = scorer.logits(matrix[lo:hi], out)[:, block - lo]
            else:
                z = scorer.logits(matrix[block], out)
            scores = scores_from_logits(scorer.kind, z)
            if all_scores is not None:
                all_scores[start : start + len(block)] = scores
            bounds = bound(block, scores)
            keep = np.flatnonzero(scores + bounds >= floor)
            kept.append((keep + start, scores[keep], bounds[keep]))
            count += len(keep)
            if count > PRUNE_AT * k:
                merged = _merge(kept)
                pos, sc, bd, floor = prune(*merged, k)
                kept, count = [(pos, sc, bd)], len(pos)
        return _merge(kept)

    if len(runs) == 1:
        parts = [run(runs[0])]
    else:
        with ThreadPoolExecutor(len(runs)) as pool:
            parts = list(pool.map(run, runs))
    positions, scores, bounds, _ = prune(*_merge(parts), k)
    return Survivors(positions, scores, bounds, all_scores)


def _merge(parts: list[tuple[Rows, Scores, Scores]]) -> tuple[Rows, Scores, Scores]:
    if not parts:
        return np.zeros(0, np.intp), np.zeros(0, np.float32), np.zeros(0, np.float32)
    return (
        np.concatenate([p[0] for p in parts]).astype(np.intp, copy=False),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
