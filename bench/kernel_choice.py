"""Why the scoring kernel is a numba loop: one pass over N x 384 rows, 4 classes, ways compared.

    .venv/bin/python bench/kernel_choice.py [--rows N]

Prints seconds (best of 3) for: the floor (a numpy column sum: one read of the float32
matrix), BLAS gemv, logits by BLAS gemm and by one gemv per class in 512-row blocks (2
threads), numpy's float16 -> float32 conversion alone, and the kernel's fused numba loops on
float32 and float16 rows (one thread). The figures are in docs/proxy.md.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt
from proxal.proxy_service import kernel
from threadpoolctl import threadpool_info, threadpool_limits

DIM, CLASSES, BLOCK, THREADS = 384, 4, 512, 2


def best(fn: Callable[[], object], repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs)


def in_halves(n: int, fn: Callable[[int, int], None]) -> Callable[[], None]:
    """fn(lo, hi) over THREADS contiguous parts of range(n), on THREADS threads."""
    bounds = np.linspace(0, n, THREADS + 1).astype(int)

    def run() -> None:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda i: fn(bounds[i], bounds[i + 1]), range(THREADS)))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    n = parser.parse_args().rows
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    half = x.astype(np.float16)
    coef = (0.05 * rng.standard_normal((CLASSES, DIM))).astype(np.float32)
    scorer = kernel.LinearScorer(coef, np.zeros(CLASSES, np.float32), "least_confidence")
    out = np.empty((CLASSES, n), dtype=np.float32)

    def blocks(fn: Callable[[npt.NDArray[np.float32], int, int], None]) -> Callable[[], None]:
        def part(lo: int, hi: int) -> None:
            for start in range(lo, hi, BLOCK):
                fn(x[start : min(hi, start + BLOCK)], start, min(hi, start + BLOCK))

        return in_halves(n, part)

    def gemm(rows: npt.NDArray[np.float32], lo: int, hi: int) -> None:
        np.dot(rows, coef.T, out=np.empty((hi - lo, CLASSES), np.float32))

    def gemv(rows: npt.NDArray[np.float32], lo: int, hi: int) -> None:
        for c in range(CLASSES):
            np.dot(rows, coef[c], out=out[c, lo:hi])

    def widen(lo: int, hi: int) -> None:
        buffer = np.empty((BLOCK, DIM), np.float32)
        for start in range(lo, hi, BLOCK):
            stop = min(hi, start + BLOCK)
            np.copyto(buffer[: stop - start], half[start:stop])

    scorer.logits(x[:8], out)
    scorer.logits(half[:8], out)  # compiled (or loaded from numba's cache) before timing
    w = np.ones(DIM, np.float32)
    with threadpool_limits(limits=THREADS, user_api="blas"):
        rows = {"BLAS gemv, one vector, 2 threads": best(lambda: x @ w)}
    with threadpool_limits(limits=1, user_api="blas"):
        rows |= {
            "floor: numpy column sum (one read of float32)": best(lambda: x.sum(axis=0)),
            "logits by gemm in 512-row blocks, 2 threads": best(blocks(gemm)),
            "logits by a gemv per class in 512-row blocks, 2 threads": best(blocks(gemv)),
            "numpy float16 -> float32 conversion alone, 2 threads": best(in_halves(n, widen)),
            "numba fused loop, float32 rows, 1 thread": best(lambda: scorer.logits(x, out)),
            "numba fused loop, float16 rows, 1 thread": best(lambda: scorer.logits(half, out)),
        }
    blas = [(i["internal_api"], i["version"], i["architecture"]) for i in threadpool_info()]
    print(f"{n} x {DIM}, {CLASSES} classes; BLAS {blas}")
    for name, seconds in rows.items():
        print(f"{name:<60} {seconds:.4f} s")


if __name__ == "__main__":
    main()
