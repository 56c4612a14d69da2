// Driver battery: postgres.js (`postgres`). Named prepared statements are its default
// (prepare: true): each distinct query text is prepared once per connection and reused.
'use strict';
const { req, cfg, SESSION_TIMEOUT, MANY_CLIENTS, Failed, expect, sleep, Battery, deadline } = require('./battery');
const postgres = req('postgres');
const { pipeline } = require('stream/promises');
const { Readable } = require('stream');

const b = new Battery('postgresjs');
const T = b.table;

// one server connection per instance (max: 1), so a "connection" here is a session
function connect(extra = {}) {
  return postgres({
    host: cfg.host, port: cfg.port, database: cfg.database, username: cfg.user, password: cfg.password,
    max: 1, connect_timeout: 15, onnotice: () => {}, ...extra,
  });
}
const end = (sql) => sql.end({ timeout: 1 }).catch(() => {});

async function login() {
  const sql = connect();
  expect((await sql`SELECT current_user AS u`)[0].u === cfg.user, 'current_user');
  await end(sql);
  const bad = connect({ password: cfg.password + 'x' });
  try {
    await bad`SELECT 1`;
  } catch (e) {
    expect(e.code === '28P01', `wrong password: unexpected error ${e.code} ${e.message}`);
    return;
  } finally {
    await end(bad);
  }
  throw new Failed('a wrong password was accepted');
}

async function setup() {
  const sql = connect();
  await sql.unsafe(`DROP TABLE IF EXISTS ${T}`);
  await sql.unsafe(`CREATE TABLE ${T} (id int PRIMARY KEY, v text)`);
  await end(sql);
}

async function simple() {
  const sql = connect();
  const r = await sql.unsafe("SELECT 1 AS a, 'a'::text AS b").simple();
  expect(r[0].a === 1 && r[0].b === 'a', `row ${JSON.stringify(r)}`);
  const r2 = await sql`SELECT 2 AS c`;
  expect(r2[0].c === 2, 'row 2');
  await end(sql);
}

async function param() {
  const sql = connect();
  const r = await sql`SELECT ${40}::int + ${2}::int AS s, ${"x'y"}::text AS t`;
  expect(r[0].s === 42 && r[0].t === "x'y", 'result');
  await end(sql);
}

async function prepared() {
  const sql = connect();
  for (let i = 0; i < 12; i++) {
    const r = await sql`SELECT ${i}::int * 2 AS d, ${String(i)}::text AS s`;
    expect(r[0].d === i * 2 && r[0].s === String(i), `execution ${i}`);
  }
  await end(sql);
}

async function txnRecovery() {
  const sql = connect();
  await sql.unsafe(`INSERT INTO ${T} VALUES (1, 'kept')`);
  try {
    await sql.begin(async (tx) => {
      await tx.unsafe(`INSERT INTO ${T} VALUES (2, 'rolled back')`);
      await tx`SELECT 1/0`;
    });
    throw new Failed('division by zero did not fail');
  } catch (e) {
    if (e instanceof Failed) throw e;
    expect(e.code === '22012', `unexpected error ${e.code} ${e.message}`);
  }
  const n = (await sql.unsafe(`SELECT count(*)::int AS n FROM ${T}`))[0].n;
  expect(n === 1, `count after rollback = ${n}`);
  await end(sql);
}

async function copyIn() {
  const sql = connect();
  const rows = [];
  for (let i = 100; i < 200; i++) rows.push(`${i}\trow${i}\n`);
  const w = await sql.unsafe(`COPY ${T} (id, v) FROM STDIN`).writable();
  await pipeline(Readable.from(rows), w);
  const n = (await sql.unsafe(`SELECT count(*)::int AS n FROM ${T} WHERE id >= 100`))[0].n;
  expect(n === 100, `copied rows = ${n}`);
  await end(sql);
}

async function copyOut() {
  const sql = connect();
  const r = await sql.unsafe(`COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT`).readable();
  let out = '';
  for await (const chunk of r) out += chunk.toString();
  const lines = out.split('\n').filter((l) => l);
  expect(lines.length === 100 && lines[0] === '100\trow100', `${lines.length} lines, first ${lines[0]}`);
  await end(sql);
}

async function cancel() {
  const sql = connect();
  await sql`SELECT 1`;
  const t0 = Date.now();
  const q = sql`SELECT pg_sleep(5)`;
  setTimeout(() => q.cancel(), 500);
  let err = null;
  try {
    await Promise.race([q, deadline(4000, 'no answer 4s after the cancel')]);
  } catch (e) {
    if (e instanceof Failed) throw e;
    err = e;
  }
  expect(err && err.code === '57014', `expected 57014, got ${err ? err.code + ' ' + err.message : 'success'}`);
  const took = (Date.now() - t0) / 1000;
  expect(took < 2.5, `cancel took ${took.toFixed(2)}s`);
  expect((await sql`SELECT 7 AS x`)[0].x === 7, 'query after cancel');
  await end(sql);
}

async function notice() {
  const got = [];
  const sql = connect({ onnotice: (n) => got.push(n.message) });
  await sql.unsafe("DO $$ BEGIN RAISE NOTICE 'hi'; END $$");
  await sleep(50);
  expect(got.length === 1 && got[0] === 'hi', `notices ${JSON.stringify(got)}`);
  await end(sql);
}

async function listenNotify() {
  const ch = T + '_ch';
  const lst = connect();
  const nt = connect();
  let resolve;
  const got = new Promise((r) => { resolve = r; });
  await lst.listen(ch, (payload) => resolve(payload));
  await nt.notify(ch, 'payload');
  const p = await Promise.race([got, deadline(2000, 'no notification within 2s')]);
  expect(p === 'payload', `payload ${p}`);
  await end(lst);
  await end(nt);
}

const SESSION = {};
async function sessionSetSticks() {
  const a = connect();
  SESSION.a = a;
  await a.unsafe(`SET statement_timeout = '${SESSION_TIMEOUT}'`);
  await a.unsafe("SET application_name = 'drv_sticky'");
  for (let i = 0; i < 3; i++) {
    const [st, an] = await a.begin(async (tx) => [
      (await tx`SHOW statement_timeout`)[0].statement_timeout,
      (await tx`SHOW application_name`)[0].application_name,
    ]);
    expect(st === SESSION_TIMEOUT && an === 'drv_sticky', `transaction ${i}: ${st}, ${an}`);
  }
}

async function sessionSetIsolated() {
  try {
    for (let i = 0; i < 5; i++) {
      const sql = connect();
      const [st, an] = await sql.begin(async (tx) => [ // a read-write transaction: on the primary
        (await tx`SHOW statement_timeout`)[0].statement_timeout,
        (await tx`SHOW application_name`)[0].application_name,
      ]);
      await end(sql);
      expect(st !== SESSION_TIMEOUT && an !== 'drv_sticky', `connection ${i} sees another session's settings: statement_timeout=${st} application_name=${an}`);
    }
  } finally {
    if (SESSION.a) { end(SESSION.a); delete SESSION.a; }
  }
}

async function manyClients() {
  const client = async (i) => {
    const sql = connect();
    try {
      for (let j = 0; j < 3; j++) {
        expect((await sql`SELECT ${i}::int + ${j}::int AS s`)[0].s === i + j, 'result');
      }
      await sql.unsafe(`INSERT INTO ${T} VALUES ($1, 'many')`, [1000 + i]);
    } finally {
      await end(sql);
    }
  };
  const res = await Promise.allSettled([...Array(MANY_CLIENTS).keys()].map(client));
  const errs = res.filter((r) => r.status === 'rejected');
  if (errs.length) throw new Failed(`${errs.length}/${MANY_CLIENTS} clients failed; first: ${errs[0].reason.message}`);
  const sql = connect();
  const n = (await sql.unsafe(`WITH w AS (UPDATE ${T} SET v = v WHERE false RETURNING 1) SELECT count(*)::int AS n FROM ${T} WHERE v = 'many'`))[0].n;
  await end(sql);
  expect(n === MANY_CLIENTS, `rows = ${n}`);
}

async function cleanup() {
  const sql = connect();
  await sql.unsafe(`DROP TABLE IF EXISTS ${T}`);
  await end(sql);
}

(async () => {
  await b.run('login', login);
  await b.run('setup', setup);
  await b.run('simple_query', simple);
  await b.run('param_query', param);
  await b.run('prepared', prepared);
  await b.run('txn_recovery', txnRecovery);
  await b.run('copy_in', copyIn);
  await b.run('copy_out', copyOut);
  await b.run('cancel', cancel);
  await b.run('notice', notice);
  await b.run('listen_notify', listenNotify);
  await b.run('session_set_sticks', sessionSetSticks);
  await b.run('session_set_isolated', sessionSetIsolated);
  await b.run('many_clients', manyClients, 30000);
  await b.run('cleanup', cleanup);
  b.finish();
})();
