// Shared harness of the Node driver programs of the battery (tests/drivers.rs).
// Connection from DRV_HOST, DRV_PORT, DRV_DB, DRV_USER, DRV_PASSWORD. Each check prints
// `ok NAME`, `FAIL NAME: reason` or `skip NAME: reason`; a check that does not settle within
// its timeout is a FAIL. Exit code 1 if any check failed.
'use strict';
const path = require('path');
const { createRequire } = require('module');

const modules = process.env.DRV_NODE_DIR || path.join(__dirname, '..', '..', 'target', 'drivers', 'node');
const req = createRequire(path.join(modules, 'package.json'));

const cfg = {
  host: process.env.DRV_HOST || '127.0.0.1',
  port: Number(process.env.DRV_PORT || 55432),
  database: process.env.DRV_DB || 'appdb',
  user: process.env.DRV_USER || 'postgres',
  password: process.env.DRV_PASSWORD || 'postgres',
};
const SESSION_TIMEOUT = '1234ms';
const MANY_CLIENTS = 40;
const CHECK_TIMEOUT = Number(process.env.DRV_CHECK_TIMEOUT || 10) * 1000;
// `direct` (the primary itself) or through lsnpool: `tx`, `session`, `auto`.
const MODE = process.env.DRV_MODE || 'direct';
// commit_token: commits made, each read back through its token on a fresh connection
const TOKEN_ROUNDS = 5;
const TOKEN_ROW = 9000;
const COMMIT_LSN = 'lsnpool.commit_lsn';

class Failed extends Error {}
function expect(cond, what) { if (!cond) throw new Failed(what); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function tableName(driver) {
  return `drv_${driver.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
}

function oneline(e) {
  const s = e instanceof Failed ? e.message : `${(e && e.constructor && e.constructor.name) || 'Error'}: ${e && e.message ? e.message : e}`;
  return s.split(/\s+/).join(' ').slice(0, 300);
}

class Battery {
  constructor(driver) { this.driver = driver; this.failed = 0; this.table = tableName(driver); }
  skip(name, reason) { console.log(`skip ${name}: ${reason}`); }
  async run(name, fn, timeout = CHECK_TIMEOUT) {
    const t0 = Date.now();
    let timer;
    const to = new Promise((_, rej) => { timer = setTimeout(() => rej(new Failed(`timed out after ${timeout / 1000}s (hang)`)), timeout); });
    try {
      await Promise.race([Promise.resolve().then(fn), to]);
      console.log(`ok ${name}`);
    } catch (e) {
      this.failed++;
      console.log(`FAIL ${name}: ${oneline(e)}`);
    } finally {
      clearTimeout(timer);
      process.stderr.write(`[${this.driver}] ${name} ${((Date.now() - t0) / 1000).toFixed(2)}s\n`);
    }
  }
  finish() {
    // leftover sockets of hung checks must not keep the process alive
    process.stdout.write('', () => process.exit(this.failed ? 1 : 0));
  }
}

// An LSN as PostgreSQL writes it ('16/B374D848') as a BigInt; Failed on anything else.
function parseLsn(value) {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(value || '');
  if (!m) throw new Failed(`${COMMIT_LSN} = ${JSON.stringify(value)} is not an LSN`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

// Why the commit_token check does not apply, or null.
function tokenSkipReason() {
  return MODE === 'direct' ? "lsnpool's ParameterStatus: only through lsnpool" : null;
}

// A promise that rejects after ms (for awaiting events).
function deadline(ms, what) {
  return new Promise((_, rej) => setTimeout(() => rej(new Failed(what)), ms).unref());
}

module.exports = {
  req, cfg, SESSION_TIMEOUT, MANY_CLIENTS, Failed, expect, sleep, Battery, deadline,
  MODE, TOKEN_ROUNDS, TOKEN_ROW, COMMIT_LSN, parseLsn, tokenSkipReason,
};
