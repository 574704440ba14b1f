"""The cache of combined statements is keyed by its parts' identity: it must keep the parts
alive (a freed part's id taken by a new statement would answer the old SQL) and stay bounded
when a caller builds parts per call."""

from __future__ import annotations

import gc
import weakref

from sqlalchemy import column, select, table

from app.db import CombinedStatements

PEOPLE = table("people", column("id"))


def test_an_entry_keeps_its_parts_alive_so_their_ids_are_never_reused() -> None:
    cache: CombinedStatements[str] = CombinedStatements()
    part = select(PEOPLE.c.id)
    watched = weakref.ref(part)
    assert cache.get_or_build((part,), (), lambda: "first") == "first"
    del part
    gc.collect()
    assert watched() is not None
    assert cache.get_or_build((watched(),), (), lambda: "second") == "first"


def test_the_shape_is_part_of_the_key() -> None:
    cache: CombinedStatements[str] = CombinedStatements()
    part = select(PEOPLE.c.id)
    assert cache.get_or_build((part,), (("a",),), lambda: "a") == "a"
    assert cache.get_or_build((part,), (("b",),), lambda: "b") == "b"


def test_parts_built_per_call_do_not_grow_it_past_its_limit() -> None:
    cache: CombinedStatements[int] = CombinedStatements(limit=3)
    built = [cache.get_or_build((select(PEOPLE.c.id),), (), lambda n=n: n) for n in range(10)]
    assert built == list(range(10))
    assert len(cache._entries) == 3
