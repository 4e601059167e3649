"""Read-only use: KB_READ_ONLY opens every transaction READ ONLY; a SELECT-only role works."""

from __future__ import annotations

import os

import asyncpg
import pytest
from sqlalchemy import text

import kb
from helpers import login_role, settings_for
from kb.db import asyncpg_kwargs


async def test_read_only_mode_refuses_writes_at_the_database(new_database) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    writer = await kb.connect(settings_for(url), url=url, upgrade=False)
    async with writer, writer.session() as s:
        await kb.create_collection(s, "kept", embedder="e", model="m", dimension=3)

    reader = await kb.connect(settings_for(url, read_only=True), url=url)
    try:
        async with reader.session() as s:
            assert [c.name for c in await kb.list_collections(s)] == ["kept"]
            assert await s.scalar(text("SHOW transaction_read_only")) == "on"
        with pytest.raises(kb.ReadOnlyError, match="read-only"):
            async with reader.session() as s:
                await kb.create_collection(s, "new", embedder="e", model="m", dimension=3)
        # Even raw SQL cannot write: the guard is the database's, not the UI's.
        with pytest.raises(kb.ReadOnlyError):
            async with reader.session() as s:
                await s.execute(text("DELETE FROM collections"))
    finally:
        await reader.close()
    check = await kb.connect(settings_for(url), url=url, upgrade=False)
    async with check, check.session() as s:
        assert [c.name for c in await kb.list_collections(s)] == ["kept"]


async def test_select_only_role(new_database) -> None:  # type: ignore[no-untyped-def]
    url = await new_database()
    admin = await asyncpg.connect(**asyncpg_kwargs(url))
    try:
        await admin.execute(
            "INSERT INTO collections (name, embedder, model, dimension) "
            "VALUES ('shared', 'hashing', 'feature-hashing-3', 3)"
        )
    finally:
        await admin.close()
    async with login_role(url, f"kb_reader_{os.getpid()}") as reader_url:
        # Without KB_READ_ONLY the role itself still refuses: a clear kb error.
        db = await kb.connect(settings_for(reader_url), url=reader_url, upgrade=False)
        try:
            async with db.session() as s:
                assert [c.name for c in await kb.list_collections(s)] == ["shared"]
            with pytest.raises(kb.ReadOnlyError, match="may not"):
                async with db.session() as s:
                    await kb.create_collection(s, "nope", embedder="e", model="m", dimension=3)
        finally:
            await db.close()
        # With KB_READ_ONLY, connect() does not try to migrate (the role could not).
        ro = await kb.connect(settings_for(reader_url, read_only=True), url=reader_url)
        try:
            status = await kb.database_status(ro)
            assert status.read_only and status.current_revision == status.head_revision
        finally:
            await ro.close()
