"""The backend contract for documents: versions, and the checks that keep read models from losing
an update.

A backend's test module subclasses :class:`DocumentContract` beside the suites of
:mod:`tidings.testing.contract`, with the same ``make_store`` method.
"""

from __future__ import annotations

import asyncio

import pytest

from tidings.errors import DocumentConflict, WrongExpectedVersion
from tidings.records import AppendOp, Document, DocumentWrite, Transaction
from tidings.store import Store
from tidings.testing.contract import StoreContract, new_message


def _put(key: str, data: bytes, expected: int | None = None) -> DocumentWrite:
    return DocumentWrite("view", key, data, expected)


def _check(key: str, expected: int) -> DocumentWrite:
    return DocumentWrite("view", key, None, expected, check=True)


class DocumentContract(StoreContract):
    """What ``ctx.get``/``ctx.put`` rely on: each write moves a document's version on, and a
    transaction whose document is not at the version it expects is refused whole."""

    async def test_a_document_counts_its_writes_and_a_delete_keeps_its_version(
        self, store: Store
    ) -> None:
        assert await store.document("view", "o1") == Document(None, 0)
        await store.commit(Transaction(documents=[_put("o1", b"1"), _put("o1", b"2")]))
        assert await store.document("view", "o1") == Document(b"2", 2)
        await store.commit(Transaction(documents=[DocumentWrite("view", "o1", None)]))
        assert await store.document("view", "o1") == Document(None, 3)
        assert await store.documents("view") == []
        await store.commit(Transaction(documents=[_put("o1", b"4", expected=3)]))
        assert await store.document("view", "o1") == Document(b"4", 4)

    async def test_a_stale_read_refuses_the_whole_transaction(self, store: Store) -> None:
        await store.commit(Transaction(documents=[_put("o1", b"1")]))
        stale = Transaction(
            [AppendOp("orders", [new_message()])],
            documents=[_put("o2", b"x"), _put("o1", b"mine", expected=0)],
        )
        with pytest.raises(DocumentConflict) as caught:
            await store.commit(stale)
        assert isinstance(caught.value, WrongExpectedVersion)
        assert (caught.value.collection, caught.value.key) == ("view", "o1")
        assert (caught.value.expected, caught.value.actual) == (0, 1)
        assert await store.document("view", "o1") == Document(b"1", 1)
        assert await store.document("view", "o2") == Document(None, 0)
        assert await store.stream_version("orders") == 0

    async def test_a_check_writes_nothing_and_guards_a_document_only_read(
        self, store: Store
    ) -> None:
        await store.commit(Transaction(documents=[_put("rate", b"3")]))
        await store.commit(Transaction(documents=[_check("rate", 1), _put("total", b"30")]))
        assert await store.document("rate", "rate") == Document(None, 0)
        assert await store.document("view", "rate") == Document(b"3", 1)
        with pytest.raises(DocumentConflict):
            await store.commit(Transaction(documents=[_check("rate", 0), _put("total", b"0")]))
        assert await store.document("view", "total") == Document(b"30", 1)

    async def test_checks_see_the_writes_before_them_in_order(self, store: Store) -> None:
        await store.commit(
            Transaction(
                documents=[
                    _check("o1", 0),
                    _put("o1", b"1"),
                    _check("o1", 1),
                    _put("o1", b"2", expected=1),
                ]
            )
        )
        assert await store.document("view", "o1") == Document(b"2", 2)
        with pytest.raises(DocumentConflict):
            await store.commit(Transaction(documents=[_put("o1", b"3"), _check("o1", 2)]))
        assert await store.document("view", "o1") == Document(b"2", 2)

    async def test_concurrent_commits_of_one_read_let_only_the_first_write(
        self, store: Store
    ) -> None:
        # Two handlers read version 0 and commit at once (one group): the second is refused
        # alone, whichever other transaction shares its group.
        results = await asyncio.gather(
            store.commit(Transaction(documents=[_put("o1", b"a", expected=0)])),
            store.commit(Transaction(documents=[_put("o1", b"b", expected=0)])),
            store.commit(Transaction(documents=[_put("o2", b"c", expected=0)])),
            return_exceptions=True,
        )
        assert [type(r).__name__ for r in results] == ["list", "DocumentConflict", "list"]
        assert await store.document("view", "o1") == Document(b"a", 1)
        assert await store.document("view", "o2") == Document(b"c", 1)
