"""ExactRows: float32 rows by id from a real LanceDB store, cached, in the order asked."""

from __future__ import annotations

import numpy as np
import pytest
from proxal.proxy_service.rows import ExactRows
from proxal.runtime.errors import NotFoundError
from proxal.runtime.versions import EmbeddingVersion
from proxal.store import EncoderInfo

from tests.conftest import add_blobs_version


def test_rows_by_id_are_the_stored_vectors_and_are_read_once(store) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    tag = add_blobs_version(store, "p", vectors, rng.integers(0, 3, 300))
    version = EmbeddingVersion("p", tag)
    rows = ExactRows(store, max_rows=100)
    ids = np.array([299, 5, 17, 5, 120])
    np.testing.assert_array_equal(rows.get(version, ids), vectors[ids])
    assert rows.reads == 4  # 5 is asked twice, read once
    np.testing.assert_array_equal(rows.get(version, [17, 299]), vectors[[17, 299]])
    assert rows.reads == 4  # cached
    assert rows.get(version, []).shape == (0, 8)


def test_unknown_ids_are_not_found_and_leave_the_cache_usable(store) -> None:
    vectors = np.eye(4, dtype=np.float32)
    tag = add_blobs_version(store, "p", vectors, [0, 1, 0, 1])
    version = EmbeddingVersion("p", tag)
    rows = ExactRows(store)
    with pytest.raises(NotFoundError, match=r"ids \[7\] are not in embedding version"):
        rows.get(version, [1, 7])
    np.testing.assert_array_equal(rows.get(version, [3]), vectors[[3]])


def test_rows_stored_out_of_id_order_are_found(store) -> None:
    store.add_pool_rows("q", "train", [f"t{i}" for i in range(6)], ["a"] * 6)
    writer = store.begin_embedding("q", EncoderInfo("synthetic", "none", 2, 0))
    vectors = np.arange(12, dtype=np.float32).reshape(6, 2)
    writer.write([4, 5], vectors[[4, 5]])
    writer.write([0, 1, 2, 3], vectors[:4])
    version = EmbeddingVersion("q", str(writer.commit().version))
    np.testing.assert_array_equal(ExactRows(store).get(version, [5, 0, 4]), vectors[[5, 0, 4]])
    np.testing.assert_array_equal(store.lookup("q", version.tag, [3, 4]), vectors[[3, 4]])
