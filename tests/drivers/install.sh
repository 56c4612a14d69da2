#!/usr/bin/env bash
# install.sh - installs the client drivers of the driver compatibility battery (tests/drivers.rs).
#
#   target/drivers/venv   python venv: psycopg 3 (binary), psycopg2-binary, asyncpg, SQLAlchemy 2
#   target/drivers/node   npm: pg, postgres (postgres.js)
#   /usr/share/java/postgresql.jar   Debian's libpostgresql-jdbc-java (pgjdbc), plus a JDK if missing
#   target/drivers/sqlx-target   the sqlx program (tests/drivers/sqlx, its own cargo workspace)
#
# Idempotent and quick when already installed (a stamp file per part records what was
# installed). A part that cannot be installed is reported and skipped: the battery then skips
# that driver with the reason written to target/drivers/<part>.unavailable.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
OUT="$ROOT/target/drivers"
mkdir -p "$OUT"

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

PY_REQS=("psycopg[binary]>=3.1,<4" "psycopg2-binary>=2.9,<3" "asyncpg>=0.29,<1" "SQLAlchemy[asyncio]>=2.0,<3")
NODE_REQS=("pg@^8" "pg-copy-streams@^7" "postgres@^3")

log() { printf 'drivers: %s\n' "$*" >&2; }

APT_UPDATED=0
# apt_install PKG...: install Debian packages (root only); `apt-get update` only when the
# install fails without it.
apt_install() {
    (( IS_ROOT )) || { log "not root: cannot install $*"; return 1; }
    command -v apt-get >/dev/null 2>&1 || { log "no apt-get: cannot install $*"; return 1; }
    log "apt-get install $*"
    if DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends "$@" >"$OUT/apt.log" 2>&1; then
        return 0
    fi
    if (( ! APT_UPDATED )); then
        APT_UPDATED=1
        log "apt-get install failed; running apt-get update and retrying"
        timeout 300 apt-get update -q >>"$OUT/apt.log" 2>&1 || true
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends "$@" >>"$OUT/apt.log" 2>&1 && return 0
    fi
    log "apt-get install $* failed; see $OUT/apt.log"
    return 1
}

unavailable() {   # unavailable PART REASON
    printf '%s\n' "$2" >"$OUT/$1.unavailable"
    log "$1 unavailable: $2"
}

# ---------------------------------------------------------------- python
install_python() {
    local venv="$OUT/venv" stamp="$OUT/venv/.lsnpool-stamp" want py
    want="$(printf '%s\n' "${PY_REQS[@]}")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]] \
       && "$venv/bin/python" -c 'import psycopg, psycopg2, asyncpg, sqlalchemy, greenlet' 2>/dev/null; then
        rm -f "$OUT/python.unavailable"
        return 0
    fi
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || { (( IS_ROOT )) && apt_install python3 python3-venv; py="$(command -v python3 || true)"; }
    [[ -n "$py" ]] || { unavailable python "python3 not found"; return 0; }
    rm -rf "$venv"
    if ! "$py" -m venv "$venv" >"$OUT/venv.log" 2>&1; then
        # Debian's python3 needs python3-venv for ensurepip
        apt_install python3-venv && rm -rf "$venv" && "$py" -m venv "$venv" >>"$OUT/venv.log" 2>&1 \
            || { unavailable python "cannot create a venv with $py; see $OUT/venv.log"; return 0; }
    fi
    log "pip install ${PY_REQS[*]} into $venv"
    if ! timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_REQS[@]}" >>"$OUT/venv.log" 2>&1; then
        unavailable python "pip install failed; see $OUT/venv.log"
        return 0
    fi
    printf '%s\n' "$want" >"$stamp"
    rm -f "$OUT/python.unavailable"
}

# ---------------------------------------------------------------- node
install_node() {
    local dir="$OUT/node" stamp="$OUT/node/.lsnpool-stamp" want
    want="$(printf '%s\n' "${NODE_REQS[@]}")"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -d "$dir/node_modules/pg" && -d "$dir/node_modules/postgres" && -d "$dir/node_modules/pg-copy-streams" ]]; then
        rm -f "$OUT/node.unavailable"
        return 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm || true
    fi
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        || { unavailable node "node/npm not found"; return 0; }
    mkdir -p "$dir"
    [[ -f "$dir/package.json" ]] || printf '{ "name": "lsnpool-driver-battery", "private": true }\n' >"$dir/package.json"
    log "npm install ${NODE_REQS[*]} into $dir"
    if ! (cd "$dir" && timeout 600 npm install --no-audit --no-fund --loglevel=error "${NODE_REQS[@]}") >"$OUT/npm.log" 2>&1; then
        unavailable node "npm install failed; see $OUT/npm.log"
        return 0
    fi
    printf '%s\n' "$want" >"$stamp"
    rm -f "$OUT/node.unavailable"
}

# ---------------------------------------------------------------- java
install_java() {
    local jar=/usr/share/java/postgresql.jar
    if ! command -v javac >/dev/null 2>&1 || ! command -v java >/dev/null 2>&1; then
        apt_install default-jdk-headless || true
    fi
    command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1 \
        || { unavailable java "javac/java not found (default-jdk-headless could not be installed)"; return 0; }
    if [[ ! -f "$jar" ]]; then
        apt_install libpostgresql-jdbc-java || true
    fi
    [[ -f "$jar" ]] || { unavailable java "$jar missing (libpostgresql-jdbc-java could not be installed)"; return 0; }
    rm -f "$OUT/java.unavailable"
}

# ---------------------------------------------------------------- rust (sqlx)
install_rust() {
    # cargo itself is the stamp: a warm build is a no-op check of the lock file.
    command -v cargo >/dev/null 2>&1 || { unavailable rust "cargo not found"; return 0; }
    log "cargo build tests/drivers/sqlx (sqlx from crates.io) into $OUT/sqlx-target"
    if ! timeout 1200 cargo build -q --manifest-path "$ROOT/tests/drivers/sqlx/Cargo.toml" \
            --target-dir "$OUT/sqlx-target" >"$OUT/sqlx-build.log" 2>&1; then
        unavailable rust "cargo build of tests/drivers/sqlx failed; see $OUT/sqlx-build.log"
        return 0
    fi
    rm -f "$OUT/rust.unavailable"
}

install_python
install_node
install_java
install_rust
for part in python node java rust; do
    [[ -f "$OUT/$part.unavailable" ]] && log "WARNING: $part drivers unavailable: $(cat "$OUT/$part.unavailable")"
done
exit 0
