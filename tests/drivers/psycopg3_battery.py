"""Driver battery: psycopg 3. Usage: psycopg3.py [default|pipeline|prepare0]
  pipeline: the statements of each check are sent in pipeline mode
  prepare0: prepare_threshold=0 (every statement is prepared, under a name, at once)"""
import sys
import threading
import time

import psycopg
from psycopg import errors, sql

from battery import (COMMIT_LSN, DB, HOST, MANY_CLIENTS, MODE, PASSWORD, PORT, SESSION_TIMEOUT,
                     TOKEN_ROUNDS, TOKEN_ROW, USER, Battery, Failed, expect, parse_lsn, run_threads,
                     token_skip_reason)

VARIANT = sys.argv[1] if len(sys.argv) > 1 else "default"
b = Battery(f"psycopg3_{VARIANT}")
T = b.table
KW = dict(host=HOST, port=PORT, dbname=DB, user=USER, password=PASSWORD, connect_timeout=15)
if VARIANT == "prepare0":
    KW["prepare_threshold"] = 0
PIPE = VARIANT == "pipeline"


def connect(autocommit=True, **kw):
    return psycopg.connect(autocommit=autocommit, **{**KW, **kw})


class _Nop:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def pipe(conn):
    return conn.pipeline() if PIPE else _Nop()


def login():
    with connect() as c:
        expect(c.execute("SELECT current_user").fetchone()[0] == USER, "current_user")
    try:
        connect(password=PASSWORD + "x").close()
    except psycopg.OperationalError as e:
        expect("password authentication failed" in str(e), f"wrong password: unexpected error {e}")
        return
    raise Failed("a wrong password was accepted")


def setup():
    with connect() as c:
        c.execute(f"DROP TABLE IF EXISTS {T}")
        c.execute(f"CREATE TABLE {T} (id int PRIMARY KEY, v text)")


def simple():
    with connect() as c:
        with pipe(c):
            cur1 = c.execute("SELECT 1, 'a'::text")
            cur2 = c.execute("SELECT 2")
        expect(cur1.fetchone() == (1, "a"), "row 1")
        expect(cur2.fetchone() == (2,), "row 2")


def param():
    with connect() as c:
        with pipe(c):
            cur = c.execute("SELECT %s::int + %s::int, %s::text", (40, 2, "x'y"))
        expect(cur.fetchone() == (42, "x'y"), "result")


def prepared():
    # more executions than prepare_threshold (5): psycopg switches to a named statement
    with connect() as c:
        cur = c.cursor()
        for i in range(12):
            with pipe(c):
                cur.execute("SELECT %s::int * 2, %s::text", (i, str(i)))
                row = cur.fetchone() if not PIPE else None
            if PIPE:
                row = cur.fetchone()
            expect(row == (i * 2, str(i)), f"execution {i}: {row}")
        for i in range(3):
            cur.execute("SELECT %s::int + 100", (i,), prepare=True)
            expect(cur.fetchone() == (i + 100,), f"prepare=True execution {i}")
        # a second connection reusing the same statement text
        with connect() as c2:
            for i in range(8):
                expect(c2.execute("SELECT %s::int * 2, %s::text", (i, str(i))).fetchone() == (i * 2, str(i)), "conn 2")


def txn_recovery():
    with connect(autocommit=False) as c:
        c.execute(f"INSERT INTO {T} VALUES (1, 'kept')")
        c.commit()
        try:
            with pipe(c):
                c.execute(f"INSERT INTO {T} VALUES (2, 'rolled back')")
                c.execute("SELECT 1/0")
            raise Failed("division by zero did not fail")
        except errors.DivisionByZero:
            pass
        expect(c.info.transaction_status == psycopg.pq.TransactionStatus.INERROR, f"status {c.info.transaction_status}")
        c.rollback()
        n = c.execute(f"SELECT count(*) FROM {T}").fetchone()[0]
        expect(n == 1, f"count after rollback = {n}")
        c.commit()


def copy_in():
    with connect() as c:
        with c.cursor().copy(f"COPY {T} (id, v) FROM STDIN") as cp:
            for i in range(100, 200):
                cp.write_row((i, f"row{i}"))
        n = c.execute(f"SELECT count(*) FROM {T} WHERE id >= 100").fetchone()[0]
        expect(n == 100, f"copied rows = {n}")


def copy_out():
    with connect() as c:
        rows = []
        with c.cursor().copy(f"COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT") as cp:
            for r in cp.rows():
                rows.append(r)
        expect(len(rows) == 100 and rows[0] == ("100", "row100"), f"{len(rows)} rows, first {rows[:1]}")


def cancel():
    with connect() as c:
        t0 = time.monotonic()
        timer = threading.Timer(0.5, c.cancel)
        timer.start()
        try:
            c.execute("SELECT pg_sleep(5)")
            raise Failed("pg_sleep(5) was not cancelled")
        except errors.QueryCanceled:
            pass
        took = time.monotonic() - t0
        expect(took < 2.5, f"cancel took {took:.2f}s")
        expect(c.execute("SELECT 7").fetchone()[0] == 7, "query after cancel")


def notice():
    with connect() as c:
        got = []
        c.add_notice_handler(lambda d: got.append(d.message_primary))
        c.execute("DO $$ BEGIN RAISE NOTICE 'hi'; END $$")
        expect(got == ["hi"], f"notices {got}")


def listen_notify():
    ch = T + "_ch"
    with connect() as listener, connect() as notifier:
        listener.execute(f"LISTEN {ch}")
        notifier.execute("SELECT pg_notify(%s, 'payload')", (ch,))
        got = [n.payload for n in listener.notifies(timeout=2, stop_after=1)]
        expect(got == ["payload"], f"notifications within 2s: {got}")


SESSION = {}


def session_set_sticks():
    a = connect()
    SESSION["a"] = a
    a.execute(f"SET statement_timeout = '{SESSION_TIMEOUT}'")
    a.execute("SET application_name = 'drv_sticky'")
    a.execute("SET search_path = drv_nowhere, public")
    for i in range(3):
        with a.transaction():
            st = a.execute("SHOW statement_timeout").fetchone()[0]
            an = a.execute("SHOW application_name").fetchone()[0]
            sp = a.execute("SHOW search_path").fetchone()[0]
        expect((st, an, sp) == (SESSION_TIMEOUT, "drv_sticky", "drv_nowhere, public"), f"transaction {i}: {st}, {an}, {sp}")


def session_set_isolated():
    # connection A (above) stays open, idle, with its settings; others must not see them
    try:
        for i in range(5):
            with connect() as c, c.transaction():  # a read-write transaction: on the primary
                st = c.execute("SHOW statement_timeout").fetchone()[0]
                an = c.execute("SHOW application_name").fetchone()[0]
                expect(st != SESSION_TIMEOUT and an != "drv_sticky", f"connection {i} sees another session's settings: statement_timeout={st} application_name={an}")
    finally:
        a = SESSION.pop("a", None)
        if a is not None:
            a.close()


def many_clients():
    def client(i):
        with connect() as c:
            for j in range(3):
                expect(c.execute("SELECT %s::int + %s::int", (i, j)).fetchone()[0] == i + j, "result")
            c.execute(f"INSERT INTO {T} VALUES (%s, 'many')", (1000 + i,))

    run_threads(MANY_CLIENTS, client, 25)
    with connect() as c:
        n = c.execute(f"WITH w AS (UPDATE {T} SET v = v WHERE false RETURNING 1) SELECT count(*) FROM {T} WHERE v = 'many'").fetchone()[0]
        expect(n == MANY_CLIENTS, f"rows = {n}")


def commit_token():
    # lsnpool reports each commit's LSN as ParameterStatus lsnpool.commit_lsn (asked for with
    # SET here); psycopg keeps it in conn.info.parameter_status. The token, presented on a
    # fresh connection reading under `eventual`, must make that read see the commit.
    # prepare=False: prepare0 would send the SETs as named statements, a shape lsnpool refuses
    # (0A000) rather than let a server take them as placeholders
    with connect() as w:
        w.execute("SET lsnpool.report_commit_lsn = on", prepare=False)
        w.execute(f"INSERT INTO {T} VALUES ({TOKEN_ROW}, '0')")
        prev = parse_lsn(w.info.parameter_status(COMMIT_LSN))
        for i in range(1, TOKEN_ROUNDS + 1):
            with pipe(w):
                w.execute(f"UPDATE {T} SET v = %s WHERE id = {TOKEN_ROW}", (str(i),))
            token = w.info.parameter_status(COMMIT_LSN)
            lsn = parse_lsn(token)
            expect(lsn > prev, f"commit {i}: {COMMIT_LSN} {token} did not advance")
            prev = lsn
            # not disturbed: the connection goes on as usual
            expect(w.execute("SELECT %s::int + 1", (i,)).fetchone() == (i + 1,), "query after the ParameterStatus")
            with connect() as r:
                if MODE == "auto":
                    r.execute("SET lsnpool.consistency = 'eventual'", prepare=False)
                r.execute(f"SET lsnpool.min_lsn = '{token}'", prepare=False)
                v = r.execute(f"SELECT v FROM {T} WHERE id = {TOKEN_ROW}").fetchone()[0]
                expect(v == str(i), f"read with token {token} saw v = {v}, not {i} (stale)")


def cleanup():
    with connect() as c:
        c.execute(f"DROP TABLE IF EXISTS {T}")


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
if token_skip_reason():
    b.skip("commit_token", token_skip_reason())
else:
    b.run("commit_token", commit_token)
b.run("cleanup", cleanup)
b.finish()
