"""The storage backends the storage tests run on: a SQLite file, and PostgreSQL for real.

PostgreSQL is the server of ``HEARTBEAT_TEST_DATABASE_URL``, else the one on
127.0.0.1:5432 (database ``test``) if it answers; each test gets a fresh schema (its
connections' ``search_path``), dropped afterwards. Without a server those tests are skipped.
"""

from __future__ import annotations

import functools
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from ledger.storage.interface import Storage
from ledger.storage.postgres import PostgresStore
from ledger.storage.sqlite import SqliteStore

URL_VARIABLE = "HEARTBEAT_TEST_DATABASE_URL"
LOCAL_URL = "postgresql://127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")


@functools.cache
def postgres_url() -> str | None:
    """The test server's URL if it answers, else None."""
    url = os.environ.get(URL_VARIABLE) or LOCAL_URL
    try:
        with psycopg.connect(url, connect_timeout=3):
            return url
    except psycopg.OperationalError:
        return None


def require_postgres() -> str:
    """The server's URL; skips the test without one, fails it if the one named is down."""
    url = postgres_url()
    if url is None and os.environ.get(URL_VARIABLE):
        pytest.fail(f"{URL_VARIABLE} names a PostgreSQL server that does not answer")
    if url is None:
        pytest.skip(f"no PostgreSQL at {URL_VARIABLE} or {LOCAL_URL}: its storage tests skipped")
    return url


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A URL whose connections work in a new, empty schema; the schema is dropped after."""
    base = require_postgres()
    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield make_conninfo(base, options=f"-c search_path={schema}")
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def database_url(base: str, dbname: str, application_name: str | None = None) -> str:
    """The ``postgresql://`` URL of ``base`` (a URL) for database ``dbname`` (its connections
    named ``application_name``, if given), as ``HEARTBEAT_DATABASE_URL`` takes it."""
    parts = urlsplit(base)
    query = dict(parse_qsl(parts.query))
    if application_name:
        query["application_name"] = application_name
    return urlunsplit(parts._replace(path=f"/{dbname}", query=urlencode(query)))


@contextmanager
def fresh_database(application_name: str | None = None) -> Iterator[str]:
    """A URL of a new, empty database on the test server (its connections named
    ``application_name``, if given); the database is dropped after, its connections cut."""
    base = require_postgres()
    name = f"hb_test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield database_url(base, name, application_name)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


class Backend:
    """One database of one backend for a test: open stores on it, all closed at the end."""

    def __init__(self, name: str, where: str) -> None:
        self.name = name
        self.where = where  # the SQLite file's path, or the PostgreSQL URL
        self._opened: list[Storage] = []

    async def open(self, *, now: Callable[[], float]) -> Storage:
        store: Storage
        if self.name == "sqlite":
            store = await SqliteStore.open(Path(self.where), now=now)
        else:
            store = await PostgresStore.open(self.where, now=now)
        self._opened.append(store)
        return store

    def settings(self) -> dict[str, object]:
        """The settings that put a service on this database."""
        if self.name == "sqlite":
            return {"db_path": Path(self.where)}
        return {"database_url": self.where}

    def query(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of ``sql`` read straight from the database, past the store."""
        if self.name == "sqlite":
            with closing(sqlite3.connect(self.where)) as conn:
                return conn.execute(sql).fetchall()
        with psycopg.connect(self.where) as pg:
            return pg.execute(sql).fetchall()

    async def close_all(self) -> None:
        for store in self._opened:
            await store.close()


@contextmanager
def database(name: str, tmp_path: Path) -> Iterator[str]:
    if name == "sqlite":
        yield str(tmp_path / "ledger.db")
    else:
        with fresh_schema() as url:
            yield url


async def backend_for(name: str, tmp_path: Path) -> AsyncIterator[Backend]:
    with database(name, tmp_path) as where:
        backend = Backend(name, where)
        try:
            yield backend
        finally:
            await backend.close_all()
