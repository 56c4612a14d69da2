"""Driver battery: psycopg2 (libpq, text protocol; no protocol-level prepared statements, so
the `prepared` check uses SQL PREPARE/EXECUTE across transactions of one connection)."""
import io
import select
import threading
import time

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from battery import (DB, HOST, MANY_CLIENTS, PASSWORD, PORT, SESSION_TIMEOUT, USER, Battery,
                     Failed, expect, run_threads)

b = Battery("psycopg2")
T = b.table
KW = dict(host=HOST, port=PORT, dbname=DB, user=USER, password=PASSWORD, connect_timeout=15)


def connect(autocommit=True, **kw):
    c = psycopg2.connect(**{**KW, **kw})
    c.autocommit = autocommit
    return c


def one(c, q, args=None):
    with c.cursor() as cur:
        cur.execute(q, args)
        return cur.fetchone()


def run(c, q, args=None):
    with c.cursor() as cur:
        cur.execute(q, args)


def login():
    c = connect()
    expect(one(c, "SELECT current_user")[0] == USER, "current_user")
    c.close()
    try:
        connect(password=PASSWORD + "x").close()
    except psycopg2.OperationalError as e:
        expect("password authentication failed" in str(e), f"wrong password: unexpected error {e}")
        return
    raise Failed("a wrong password was accepted")


def setup():
    c = connect()
    run(c, f"DROP TABLE IF EXISTS {T}")
    run(c, f"CREATE TABLE {T} (id int PRIMARY KEY, v text)")
    c.close()


def simple():
    c = connect()
    expect(one(c, "SELECT 1, 'a'::text") == (1, "a"), "row")
    c.close()


def param():
    c = connect()
    expect(one(c, "SELECT %s::int + %s::int, %s::text", (40, 2, "x'y")) == (42, "x'y"), "result")
    c.close()


def prepared():
    c = connect(autocommit=False)
    run(c, "PREPARE drv_p2 (int) AS SELECT $1 * 2")
    c.commit()
    for i in range(8):
        expect(one(c, "EXECUTE drv_p2 (%s)", (i,)) == (i * 2,), f"execution {i}")
        c.commit()
    run(c, "DEALLOCATE drv_p2")
    c.commit()
    c.close()


def txn_recovery():
    c = connect(autocommit=False)
    run(c, f"INSERT INTO {T} VALUES (1, 'kept')")
    c.commit()
    run(c, f"INSERT INTO {T} VALUES (2, 'rolled back')")
    try:
        run(c, "SELECT 1/0")
        raise Failed("division by zero did not fail")
    except psycopg2.errors.DivisionByZero:
        pass
    expect(c.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR, "not in error state")
    c.rollback()
    n = one(c, f"SELECT count(*) FROM {T}")[0]
    expect(n == 1, f"count after rollback = {n}")
    c.commit()
    c.close()


def copy_in():
    c = connect()
    data = "".join(f"{i}\trow{i}\n" for i in range(100, 200))
    with c.cursor() as cur:
        cur.copy_expert(f"COPY {T} (id, v) FROM STDIN", io.StringIO(data))
    n = one(c, f"SELECT count(*) FROM {T} WHERE id >= 100")[0]
    expect(n == 100, f"copied rows = {n}")
    c.close()


def copy_out():
    c = connect()
    buf = io.StringIO()
    with c.cursor() as cur:
        cur.copy_expert(f"COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT", buf)
    lines = buf.getvalue().splitlines()
    expect(len(lines) == 100 and lines[0] == "100\trow100", f"{len(lines)} lines, first {lines[:1]}")
    c.close()


def cancel():
    c = connect()
    t0 = time.monotonic()
    timer = threading.Timer(0.5, c.cancel)
    timer.start()
    try:
        run(c, "SELECT pg_sleep(5)")
        raise Failed("pg_sleep(5) was not cancelled")
    except psycopg2.errors.QueryCanceled:
        pass
    took = time.monotonic() - t0
    expect(took < 2.5, f"cancel took {took:.2f}s")
    expect(one(c, "SELECT 7")[0] == 7, "query after cancel")
    c.close()


def notice():
    c = connect()
    run(c, "DO $$ BEGIN RAISE NOTICE 'hi'; END $$")
    expect(any("hi" in n for n in c.notices), f"notices {c.notices}")
    c.close()


def listen_notify():
    ch = T + "_ch"
    lst, nt = connect(), connect()
    run(lst, f"LISTEN {ch}")
    run(nt, "SELECT pg_notify(%s, 'payload')", (ch,))
    deadline = time.monotonic() + 2
    got = []
    while not got and time.monotonic() < deadline:
        if select.select([lst], [], [], max(0.0, deadline - time.monotonic()))[0]:
            lst.poll()
            while lst.notifies:
                got.append(lst.notifies.pop(0).payload)
    expect(got == ["payload"], f"notifications within 2s: {got}")
    lst.close()
    nt.close()


SESSION = {}


def session_set_sticks():
    a = connect(autocommit=False)
    SESSION["a"] = a
    run(a, f"SET statement_timeout = '{SESSION_TIMEOUT}'")
    run(a, "SET application_name = 'drv_sticky'")
    a.commit()
    for i in range(3):
        st = one(a, "SHOW statement_timeout")[0]
        an = one(a, "SHOW application_name")[0]
        a.commit()
        expect((st, an) == (SESSION_TIMEOUT, "drv_sticky"), f"transaction {i}: {st}, {an}")


def session_set_isolated():
    try:
        for i in range(5):
            c = connect(autocommit=False)  # a read-write transaction: on the primary
            st = one(c, "SHOW statement_timeout")[0]
            an = one(c, "SHOW application_name")[0]
            c.commit()
            c.close()
            expect(st != SESSION_TIMEOUT and an != "drv_sticky", f"connection {i} sees another session's settings: statement_timeout={st} application_name={an}")
    finally:
        a = SESSION.pop("a", None)
        if a is not None:
            a.close()


def many_clients():
    def client(i):
        c = connect()
        for j in range(3):
            expect(one(c, "SELECT %s::int + %s::int", (i, j))[0] == i + j, "result")
        run(c, f"INSERT INTO {T} VALUES (%s, 'many')", (1000 + i,))
        c.close()

    run_threads(MANY_CLIENTS, client, 25)
    c = connect()
    n = one(c, f"WITH w AS (UPDATE {T} SET v = v WHERE false RETURNING 1) SELECT count(*) FROM {T} WHERE v = 'many'")[0]
    c.close()
    expect(n == MANY_CLIENTS, f"rows = {n}")


def cleanup():
    c = connect()
    run(c, f"DROP TABLE IF EXISTS {T}")
    c.close()


b.run("login", login)
b.run("setup", setup)
b.run("simple_query", simple)
b.run("param_query", param)
b.run("prepared", prepared)
b.run("txn_recovery", txn_recovery)
b.run("copy_in", copy_in)
b.run("copy_out", copy_out)
b.run("cancel", cancel)
b.run("notice", notice)
b.run("listen_notify", listen_notify)
b.run("session_set_sticks", session_set_sticks)
b.run("session_set_isolated", session_set_isolated)
b.run("many_clients", many_clients, timeout=30)
b.run("cleanup", cleanup)
b.finish()
