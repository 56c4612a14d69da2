"""Shared harness of the Python driver programs of the battery (tests/drivers.rs).

Connection from the environment: DRV_HOST, DRV_PORT, DRV_DB, DRV_USER, DRV_PASSWORD.
Each check prints `ok NAME`, `FAIL NAME: reason` or `skip NAME: reason`; a check that
does not finish within its timeout is a FAIL (its thread is abandoned). The process exits 1
if any check failed.
"""
import asyncio
import os
import random
import sys
import threading
import time

HOST = os.environ.get("DRV_HOST", "127.0.0.1")
PORT = int(os.environ.get("DRV_PORT", "55432"))
DB = os.environ.get("DRV_DB", "appdb")
USER = os.environ.get("DRV_USER", "postgres")
PASSWORD = os.environ.get("DRV_PASSWORD", "postgres")
URL = f"postgresql://{USER}:{PASSWORD}@{HOST}:{PORT}/{DB}"
# How the harness reaches the server: `direct` (the primary itself), or through lsnpool: `tx`,
# `session`, `auto`. Checks of lsnpool's own features are skipped directly.
MODE = os.environ.get("DRV_MODE", "direct")

# The value a session-level SET gives in one connection; no other connection may see it.
SESSION_TIMEOUT = "1234ms"
CHECK_TIMEOUT = float(os.environ.get("DRV_CHECK_TIMEOUT", "10"))
MANY_CLIENTS = 40


def table_name(driver):
    tag = "".join(c if c.isalnum() else "_" for c in driver.lower())
    return f"drv_{tag}_{os.getpid()}_{random.randrange(1_000_000)}"


class Failed(Exception):
    pass


# commit_token: commits made, each read back through its token on a fresh connection
TOKEN_ROUNDS = 5
TOKEN_ROW = 9000
COMMIT_LSN = "lsnpool.commit_lsn"


def parse_lsn(value):
    """An LSN as PostgreSQL writes it ('16/B374D848') as an int; Failed on anything else."""
    try:
        hi, lo = value.split("/")
        if not (0 < len(hi) <= 8 and 0 < len(lo) <= 8):
            raise ValueError
        return (int(hi, 16) << 32) | int(lo, 16)
    except (AttributeError, ValueError):
        raise Failed(f"{COMMIT_LSN} = {value!r} is not an LSN") from None


def token_skip_reason():
    """Why the commit_token check does not apply, or None."""
    if MODE == "direct":
        return "lsnpool's ParameterStatus: only through lsnpool"
    return None


def expect(cond, what):
    if not cond:
        raise Failed(what)


def _oneline(e):
    s = f"{type(e).__name__}: {e}" if not isinstance(e, Failed) else str(e)
    return " ".join(s.split())[:300]


class Battery:
    def __init__(self, driver):
        self.driver = driver
        self.failed = 0
        self.table = table_name(driver)

    def _report(self, name, err, took):
        if err is None:
            print(f"ok {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {err}", flush=True)
        sys.stderr.write(f"[{self.driver}] {name} {took:.2f}s\n")

    def skip(self, name, reason):
        print(f"skip {name}: {reason}", flush=True)

    def run(self, name, fn, timeout=CHECK_TIMEOUT):
        """Runs fn() in a daemon thread; a timeout is a FAIL and the thread is left behind."""
        box = {}

        def target():
            try:
                fn()
                box["err"] = None
            except BaseException as e:  # noqa: BLE001
                box["err"] = _oneline(e)

        t0 = time.monotonic()
        t = threading.Thread(target=target, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self._report(name, f"timed out after {timeout:g}s (hang)", time.monotonic() - t0)
        else:
            self._report(name, box.get("err", "no result"), time.monotonic() - t0)

    def arun(self, loop, name, coro_fn, timeout=CHECK_TIMEOUT):
        """Runs an async check on `loop` with a timeout."""
        t0 = time.monotonic()
        err = None
        try:
            loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
        except asyncio.TimeoutError:
            err = f"timed out after {timeout:g}s (hang)"
        except BaseException as e:  # noqa: BLE001
            err = _oneline(e)
        self._report(name, err, time.monotonic() - t0)

    def finish(self):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if self.failed else 0)


def run_threads(n, fn, timeout):
    """Runs fn(i) in n threads at once; raises the first error, or Failed on a timeout."""
    errs = []
    done = []

    def target(i):
        try:
            fn(i)
            done.append(i)
        except BaseException as e:  # noqa: BLE001
            errs.append(f"client {i}: {_oneline(e)}")

    ts = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    if errs:
        raise Failed(f"{len(errs)}/{n} clients failed; first: {errs[0]}")
    if len(done) < n:
        raise Failed(f"only {len(done)}/{n} clients finished within {timeout}s")
