"""The filter builder quotes its literals: a value with a quote round-trips through Lance.

Pool, session and split names can never hold a quote (proxal.runtime.names.check_name allows
a-z, 0-9, '_' and '-'), so the round trips below go through `Tables` directly, and through
`update_session` (SQL, bound parameters), whose config may hold quotes.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from proxal.runtime.errors import InvalidArgumentError
from proxal.store import SessionRecord, Store
from proxal.store.pools import POOL_SCHEMA
from proxal.store.tables import Tables, eq, in_ints, quote

ODD = "o'brien's ''pool'' -- x' OR '1'='1"
NAMES = pa.schema([("session", pa.string()), ("pool", pa.string())])


def test_eq_joins_columns_and_doubles_quotes() -> None:
    assert eq(session="x", split="train") == "session = 'x' AND split = 'train'"
    assert eq(session="o'b") == "session = 'o''b'"
    assert quote("''") == "''''''"
    assert in_ints("id", [3, 1]) == "id IN (3,1)"
    with pytest.raises(ValueError):
        eq()


def test_a_value_with_a_quote_round_trips_through_the_tables(tmp_path: Path) -> None:
    tables = Tables(str(tmp_path))
    rows = [{"session": name, "pool": "p"} for name in (ODD, "other", "o")]
    tables.append("names", pa.Table.from_pylist(rows, schema=NAMES))
    found = tables.read("names", where=eq(session=ODD), columns=["session"])
    assert found is not None and found.column("session").to_pylist() == [ODD]
    tables.delete("names", eq(session=ODD))
    left = tables.read("names", columns=["session"])
    assert left is not None and sorted(left.column("session").to_pylist()) == ["o", "other"]


def test_pool_rows_with_a_quoted_split_are_read_by_split(tmp_path: Path) -> None:
    tables = Tables(str(tmp_path))
    rows = pa.table(
        {"id": [0, 1, 2], "text": ["a", "b", "c"], "label": ["x", None, "y"]}
        | {"split": [ODD, "train", ODD]},
        schema=POOL_SCHEMA,
    )
    tables.append("pool__p", rows)
    found = tables.read("pool__p", where=eq(split=ODD), columns=["id"])
    assert found is not None and found.column("id").to_pylist() == [0, 2]
    found = tables.read("pool__p", where=eq(split=ODD) + " AND " + in_ints("id", [2]))
    assert found is not None and found.column("text").to_pylist() == ["c"]


def test_store_names_cannot_hold_quotes_and_configs_with_quotes_round_trip(
    tmp_path: Path,
) -> None:
    store = Store(str(tmp_path / "store"))
    store.add_pool_rows("p", "train", ["a", "b"], ["x", "y"])
    with pytest.raises(InvalidArgumentError):
        store.create_session(SessionRecord("o'b", "p", "v1", "margin", 2, 0))
    with pytest.raises(InvalidArgumentError):
        store.pool_rows("p", split="o'b")
    store.create_session(SessionRecord("s", "p", "v1", "margin", 2, 0, config={"q": ODD}))
    store.update_session("s", "v2", {"note": ODD})
    got = store.get_session("s")
    assert (got.embedding_version, got.config) == ("v2", {"note": ODD})
    store.delete_session("s")
    assert store.list_sessions() == []
