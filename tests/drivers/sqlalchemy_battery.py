"""Driver battery: SQLAlchemy 2 Core. Usage: sqlalchemy_battery.py psycopg|asyncpg
(psycopg: the sync engine over psycopg 3; asyncpg: the asyncio engine over asyncpg).
SQLAlchemy has no COPY, cancel, NOTICE or LISTEN API of its own: those checks are the bare
drivers' (psycopg3_battery.py, asyncpg_battery.py)."""
import asyncio
import sys

from sqlalchemy import create_engine, exc, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from battery import (DB, HOST, MANY_CLIENTS, PASSWORD, PORT, SESSION_TIMEOUT, USER, Battery,
                     Failed, expect, run_threads)

DIALECT = sys.argv[1] if len(sys.argv) > 1 else "psycopg"
b = Battery(f"sqlalchemy_{DIALECT}")
T = b.table


def url(password=PASSWORD):
    return f"postgresql+{DIALECT}://{USER}:{password}@{HOST}:{PORT}/{DB}"


# NullPool: every connect() is a new server login, so "another connection" really is one
if DIALECT == "asyncpg":
    engine = create_async_engine(url(), poolclass=NullPool, connect_args={"timeout": 15})
else:
    engine = create_engine(url(), poolclass=NullPool, connect_args={"connect_timeout": 15})

SKIPPED = {
    "copy_in": "SQLAlchemy has no COPY API",
    "copy_out": "SQLAlchemy has no COPY API",
    "cancel": "SQLAlchemy has no cancel API",
    "notice": "SQLAlchemy has no NOTICE API",
    "listen_notify": "SQLAlchemy has no LISTEN API",
}


# The checks are written once, as coroutines over a small facade: `conn.q(sql, **params)`
# returns all rows; the sync engine runs them through the same awaits (nothing suspends).
class SyncConn:
    def __init__(self, c):
        self.c = c

    async def q(self, sql, **p):
        r = self.c.execute(text(sql), p)
        return r.fetchall() if r.returns_rows else []

    async def commit(self):
        self.c.commit()

    async def rollback(self):
        self.c.rollback()

    async def close(self):
        self.c.close()


class AsyncConn(SyncConn):
    async def q(self, sql, **p):
        r = await self.c.execute(text(sql), p)
        return r.fetchall() if r.returns_rows else []

    async def commit(self):
        await self.c.commit()

    async def rollback(self):
        await self.c.rollback()

    async def close(self):
        await self.c.close()


async def connect(eng=None):
    eng = eng or engine
    if DIALECT == "asyncpg":
        return AsyncConn(await eng.connect())
    return SyncConn(eng.connect())


async def login():
    c = await connect()
    expect((await c.q("SELECT current_user"))[0][0] == USER, "current_user")
    await c.close()
    if DIALECT == "asyncpg":
        bad = create_async_engine(url(PASSWORD + "x"), poolclass=NullPool)
    else:
        bad = create_engine(url(PASSWORD + "x"), poolclass=NullPool)
    try:
        c = await connect(bad)
        await c.close()
    except exc.DBAPIError as e:
        expect("password authentication failed" in str(e), f"wrong password: unexpected error {e}")
        return
    raise Failed("a wrong password was accepted")


async def setup():
    c = await connect()
    await c.q(f"DROP TABLE IF EXISTS {T}")
    await c.q(f"CREATE TABLE {T} (id int PRIMARY KEY, v text)")
    await c.commit()
    await c.close()


async def simple():
    c = await connect()
    expect(tuple((await c.q("SELECT 1, 'a'::text"))[0]) == (1, "a"), "row")
    await c.close()


async def param():
    c = await connect()
    row = (await c.q("SELECT CAST(:a AS int) + CAST(:b AS int), CAST(:s AS text)", a=40, b=2, s="x'y"))[0]
    expect(tuple(row) == (42, "x'y"), f"result {row}")
    await c.close()


async def prepared():
    c = await connect()
    for i in range(12):
        row = (await c.q("SELECT CAST(:i AS int) * 2, CAST(:s AS text)", i=i, s=str(i)))[0]
        expect(tuple(row) == (i * 2, str(i)), f"execution {i}: {row}")
        await c.commit()
    await c.close()


async def txn_recovery():
    c = await connect()
    await c.q(f"INSERT INTO {T} VALUES (1, 'kept')")
    await c.commit()
    await c.q(f"INSERT INTO {T} VALUES (2, 'rolled back')")
    try:
        await c.q("SELECT 1/0")
        raise Failed("division by zero did not fail")
    except exc.DBAPIError as e:
        expect("division by zero" in str(e), f"unexpected error {e}")
    await c.rollback()
    n = (await c.q(f"SELECT count(*) FROM {T}"))[0][0]
    expect(n == 1, f"count after rollback = {n}")
    await c.commit()
    await c.close()


SESSION = {}


async def session_set_sticks():
    a = await connect()
    SESSION["a"] = a
    await a.q(f"SET statement_timeout = '{SESSION_TIMEOUT}'")
    await a.q("SET application_name = 'drv_sticky'")
    await a.commit()
    for i in range(3):
        st = (await a.q("SHOW statement_timeout"))[0][0]
        an = (await a.q("SHOW application_name"))[0][0]
        await a.commit()
        expect((st, an) == (SESSION_TIMEOUT, "drv_sticky"), f"transaction {i}: {st}, {an}")


async def session_set_isolated():
    try:
        for i in range(5):
            c = await connect()
            st = (await c.q("SHOW statement_timeout"))[0][0]
            an = (await c.q("SHOW application_name"))[0][0]
            await c.close()
            expect(st != SESSION_TIMEOUT and an != "drv_sticky", f"connection {i} sees another session's settings: statement_timeout={st} application_name={an}")
    finally:
        a = SESSION.pop("a", None)
        if a is not None:
            await a.close()


async def client(i):
    c = await connect()
    for j in range(3):
        expect((await c.q("SELECT CAST(:i AS int) + CAST(:j AS int)", i=i, j=j))[0][0] == i + j, "result")
    await c.q(f"INSERT INTO {T} VALUES (:id, 'many')", id=1000 + i)
    await c.commit()
    await c.close()


async def many_clients():
    if DIALECT == "asyncpg":
        res = await asyncio.gather(*(client(i) for i in range(MANY_CLIENTS)), return_exceptions=True)
        errs = [r for r in res if isinstance(r, BaseException)]
        if errs:
            raise Failed(f"{len(errs)}/{MANY_CLIENTS} clients failed; first: {type(errs[0]).__name__}: {errs[0]}")
    else:
        run_threads(MANY_CLIENTS, lambda i: asyncio.run(client(i)), 25)
    c = await connect()
    n = (await c.q(f"WITH w AS (UPDATE {T} SET v = v WHERE false RETURNING 1) SELECT count(*) FROM {T} WHERE v = 'many'"))[0][0]
    await c.close()
    expect(n == MANY_CLIENTS, f"rows = {n}")


async def cleanup():
    c = await connect()
    await c.q(f"DROP TABLE IF EXISTS {T}")
    await c.commit()
    await c.close()


CHECKS = [("login", login), ("setup", setup), ("simple_query", simple), ("param_query", param),
          ("prepared", prepared), ("txn_recovery", txn_recovery), ("copy_in", None), ("copy_out", None),
          ("cancel", None), ("notice", None), ("listen_notify", None),
          ("session_set_sticks", session_set_sticks), ("session_set_isolated", session_set_isolated),
          ("many_clients", many_clients), ("cleanup", cleanup)]

if DIALECT == "asyncpg":
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    for name, fn in CHECKS:
        if fn is None:
            b.skip(name, SKIPPED[name])
        else:
            b.arun(loop, name, fn, 30 if name == "many_clients" else 10)
else:
    for name, fn in CHECKS:
        if fn is None:
            b.skip(name, SKIPPED[name])
        else:
            b.run(name, (lambda f: lambda: asyncio.run(f()))(fn), 30 if name == "many_clients" else 10)
b.finish()
