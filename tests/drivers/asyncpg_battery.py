"""Driver battery: asyncpg (extended protocol only; every statement is prepared under a name
and cached per connection)."""
import asyncio
import io
import time

import asyncpg

from battery import (COMMIT_LSN, DB, HOST, MANY_CLIENTS, MODE, PASSWORD, PORT, SESSION_TIMEOUT,
                     TOKEN_ROUNDS, TOKEN_ROW, USER, Battery, Failed, expect, parse_lsn,
                     token_skip_reason)

b = Battery("asyncpg")
T = b.table
KW = dict(host=HOST, port=PORT, database=DB, user=USER, password=PASSWORD, timeout=15)
loop = asyncio.new_event_loop()
asyncio.set_event_loop(loop)


async def connect(**kw):
    return await asyncpg.connect(**{**KW, **kw})


async def login():
    c = await connect()
    expect(await c.fetchval("SELECT current_user") == USER, "current_user")
    await c.close()
    try:
        await (await connect(password=PASSWORD + "x")).close()
    except asyncpg.InvalidPasswordError:
        return
    raise Failed("a wrong password was accepted")


async def setup():
    c = await connect()
    await c.execute(f"DROP TABLE IF EXISTS {T}; CREATE TABLE {T} (id int PRIMARY KEY, v text)")
    await c.close()


async def simple():
    c = await connect()
    # no arguments: asyncpg sends a simple Query
    await c.execute("SELECT 1; SELECT 2")
    expect(tuple(await c.fetchrow("SELECT 1, 'a'::text")) == (1, "a"), "row")
    await c.close()


async def param():
    c = await connect()
    expect(tuple(await c.fetchrow("SELECT $1::int + $2::int, $3::text", 40, 2, "x'y")) == (42, "x'y"), "result")
    await c.close()


async def prepared():
    c = await connect()
    st = await c.prepare("SELECT $1::int * 2, $2::text")
    for i in range(12):
        expect(tuple(await st.fetchrow(i, str(i))) == (i * 2, str(i)), f"execution {i}")
    for i in range(12):  # the statement cache
        expect(await c.fetchval("SELECT $1::int + 100", i) == i + 100, f"cached execution {i}")
    await c.close()


async def txn_recovery():
    c = await connect()
    await c.execute(f"INSERT INTO {T} VALUES (1, 'kept')")
    tr = c.transaction()
    await tr.start()
    await c.execute(f"INSERT INTO {T} VALUES (2, 'rolled back')")
    try:
        await c.fetchval("SELECT 1/$1::int", 0)
        raise Failed("division by zero did not fail")
    except asyncpg.DivisionByZeroError:
        pass
    await tr.rollback()
    n = await c.fetchval(f"SELECT count(*) FROM {T}")
    expect(n == 1, f"count after rollback = {n}")
    await c.close()


async def copy_in():
    c = await connect()
    await c.copy_records_to_table(T, records=[(i, f"row{i}") for i in range(100, 200)], columns=["id", "v"])
    n = await c.fetchval(f"SELECT count(*) FROM {T} WHERE id >= 100")
    expect(n == 100, f"copied rows = {n}")
    await c.close()


async def copy_out():
    c = await connect()
    buf = io.BytesIO()
    await c.copy_from_query("SELECT g, 'row' || g FROM generate_series(100, 199) g", output=buf)
    lines = buf.getvalue().decode().splitlines()
    expect(len(lines) == 100 and lines[0] == "100\trow100", f"{len(lines)} lines, first {lines[:1]}")
    await c.close()


async def cancel():
    c = await connect()
    t0 = time.monotonic()
    try:
        # the timeout makes asyncpg send a CancelRequest
        await c.execute("SELECT pg_sleep(5)", timeout=0.5)
        raise Failed("pg_sleep(5) was not cancelled")
    except asyncio.TimeoutError:
        pass
    took = time.monotonic() - t0
    expect(took < 2.5, f"cancel took {took:.2f}s")
    expect(await c.fetchval("SELECT 7") == 7, "query after cancel")
    took = time.monotonic() - t0
    expect(took < 3, f"cancel and next query took {took:.2f}s")
    await c.close()


async def notice():
    c = await connect()
    got = []
    c.add_log_listener(lambda conn, msg: got.append(msg.message))
    await c.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")
    await asyncio.sleep(0.05)
    expect(got == ["hi"], f"notices {got}")
    await c.close()


async def listen_notify():
    ch = T + "_ch"
    lst, nt = await connect(), await connect()
    fut = loop.create_future()
    await lst.add_listener(ch, lambda conn, pid, channel, payload: fut.done() or fut.set_result(payload))
    await nt.execute(f"SELECT pg_notify('{ch}', 'payload')")
    try:
        got = await asyncio.wait_for(fut, 2)
    except asyncio.TimeoutError:
        raise Failed("no notification within 2s")
    expect(got == "payload", f"payload {got}")
    await lst.close()
    await nt.close()


SESSION = {}


async def session_set_sticks():
    a = await connect()
    SESSION["a"] = a
    await a.execute(f"SET statement_timeout = '{SESSION_TIMEOUT}'")
    await a.execute("SET application_name = 'drv_sticky'")
    for i in range(3):
        async with a.transaction():
            st = await a.fetchval("SHOW statement_timeout")
            an = await a.fetchval("SHOW application_name")
        expect((st, an) == (SESSION_TIMEOUT, "drv_sticky"), f"transaction {i}: {st}, {an}")


async def session_set_isolated():
    try:
        for i in range(5):
            c = await connect()
            async with c.transaction():  # a read-write transaction: on the primary
                st = await c.fetchval("SHOW statement_timeout")
                an = await c.fetchval("SHOW application_name")
            await c.close()
            expect(st != SESSION_TIMEOUT and an != "drv_sticky", f"connection {i} sees another session's settings: statement_timeout={st} application_name={an}")
    finally:
        a = SESSION.pop("a", None)
        if a is not None:
            a.terminate()


async def many_clients():
    async def client(i):
        c = await connect()
        for j in range(3):
            expect(await c.fetchval("SELECT $1::int + $2::int", i, j) == i + j, "result")
        await c.execute(f"INSERT INTO {T} VALUES ($1, 'many')", 1000 + i)
        await c.close()

    res = await asyncio.gather(*(client(i) for i in range(MANY_CLIENTS)), return_exceptions=True)
    errs = [r for r in res if isinstance(r, BaseException)]
    if errs:
        raise Failed(f"{len(errs)}/{MANY_CLIENTS} clients failed; first: {type(errs[0]).__name__}: {errs[0]}")
    c = await connect()
    n = await c.fetchval(f"WITH w AS (UPDATE {T} SET v = v WHERE false RETURNING 1) SELECT count(*) FROM {T} WHERE v = 'many'")
    await c.close()
    expect(n == MANY_CLIENTS, f"rows = {n}")


async def commit_token():
    # Asked for in the startup packet (asyncpg sends server_settings as startup parameters);
    # asyncpg keeps every ParameterStatus in conn.get_settings(), by name.
    w = await connect(server_settings={"lsnpool.report_commit_lsn": "on"})
    try:
        await w.execute(f"INSERT INTO {T} VALUES ({TOKEN_ROW}, '0')")
        prev = parse_lsn(getattr(w.get_settings(), COMMIT_LSN, None))
        for i in range(1, TOKEN_ROUNDS + 1):
            await w.execute(f"UPDATE {T} SET v = $1 WHERE id = {TOKEN_ROW}", str(i))
            token = getattr(w.get_settings(), COMMIT_LSN, None)
            lsn = parse_lsn(token)
            expect(lsn > prev, f"commit {i}: {COMMIT_LSN} {token} did not advance")
            prev = lsn
            expect(await w.fetchval("SELECT $1::int + 1", i) == i + 1, "query after the ParameterStatus")
            r = await connect()
            try:
                if MODE == "auto":
                    await r.execute("SET lsnpool.consistency = 'eventual'")
                await r.execute(f"SET lsnpool.min_lsn = '{token}'")
                v = await r.fetchval(f"SELECT v FROM {T} WHERE id = {TOKEN_ROW}")
                expect(v == str(i), f"read with token {token} saw v = {v}, not {i} (stale)")
            finally:
                await r.close()
    finally:
        await w.close()


async def cleanup():
    c = await connect()
    await c.execute(f"DROP TABLE IF EXISTS {T}")
    await c.close()


for name, fn, *t in [("login", login), ("setup", setup), ("simple_query", simple), ("param_query", param),
                     ("prepared", prepared), ("txn_recovery", txn_recovery), ("copy_in", copy_in),
                     ("copy_out", copy_out), ("cancel", cancel), ("notice", notice),
                     ("listen_notify", listen_notify), ("session_set_sticks", session_set_sticks),
                     ("session_set_isolated", session_set_isolated), ("many_clients", many_clients, 30),
                     ("commit_token", commit_token), ("cleanup", cleanup)]:
    if name == "commit_token" and token_skip_reason():
        b.skip(name, token_skip_reason())
        continue
    b.arun(loop, name, fn, *t)
b.finish()
