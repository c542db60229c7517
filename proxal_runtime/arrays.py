"""Packed little-endian arrays: how ids, labels and scores travel over gRPC."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from proxal.runtime.errors import InvalidArgumentError

_INT64 = np.dtype("<i8")
_INT32 = np.dtype("<i4")
_FLOAT32 = np.dtype("<f4")


def pack_int64(values: npt.ArrayLike) -> bytes:
    """(n,) integers -> 8n bytes."""
    return np.ascontiguousarray(values, dtype=_INT64).tobytes()


def pack_int32(values: npt.ArrayLike) -> bytes:
    """(n,) integers -> 4n bytes."""
    return np.ascontiguousarray(values, dtype=_INT32).tobytes()


def pack_float32(values: npt.ArrayLike) -> bytes:
    """(n,) floats -> 4n bytes."""
    return np.ascontiguousarray(values, dtype=_FLOAT32).tobytes()


def _unpack(data: bytes, dtype: np.dtype, field: str) -> np.ndarray:
    if len(data) % dtype.itemsize:
        raise InvalidArgumentError(
            f"{field}: {len(data)} bytes is not a whole number of {dtype.itemsize}-byte "
            f"little-endian values; pack the array with numpy .astype('{dtype.str}').tobytes()"
        )
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def unpack_int64(data: bytes, field: str = "ids") -> npt.NDArray[np.int64]:
    """8n bytes -> (n,) int64; raises InvalidArgumentError naming `field` if malformed."""
    return _unpack(data, _INT64, field)


def unpack_int32(data: bytes, field: str = "labels") -> npt.NDArray[np.int32]:
    """4n bytes -> (n,) int32."""
    return _unpack(data, _INT32, field)


def unpack_float32(data: bytes, field: str = "scores") -> npt.NDArray[np.float32]:
    """4n bytes -> (n,) float32."""
    return _unpack(data, _FLOAT32, field)
