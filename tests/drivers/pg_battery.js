// Driver battery: node-postgres (`pg`), with pg-copy-streams for COPY.
'use strict';
const {
  req, cfg, SESSION_TIMEOUT, MANY_CLIENTS, Failed, expect, sleep, Battery, deadline,
  MODE, TOKEN_ROUNDS, TOKEN_ROW, COMMIT_LSN, parseLsn, tokenSkipReason,
} = require('./battery');
const pg = req('pg');
const { from: copyFrom, to: copyTo } = req('pg-copy-streams');
const { pipeline } = require('stream/promises');
const { Readable, Writable } = require('stream');

const b = new Battery('node_pg');
const T = b.table;

async function connect(extra = {}) {
  const c = new pg.Client({ ...cfg, connectionTimeoutMillis: 15000, ...extra });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function login() {
  const c = await connect();
  expect((await c.query('SELECT current_user AS u')).rows[0].u === cfg.user, 'current_user');
  await c.end();
  try {
    const bad = await connect({ password: cfg.password + 'x' });
    await bad.end();
  } catch (e) {
    expect(/password authentication failed/.test(e.message), `wrong password: unexpected error ${e.message}`);
    return;
  }
  throw new Failed('a wrong password was accepted');
}

async function setup() {
  const c = await connect();
  await c.query(`DROP TABLE IF EXISTS ${T}; CREATE TABLE ${T} (id int PRIMARY KEY, v text)`);
  await c.end();
}

async function simple() {
  const c = await connect();
  const r = await c.query("SELECT 1 AS a, 'a'::text AS b");
  expect(r.rows[0].a === 1 && r.rows[0].b === 'a', 'row');
  await c.end();
}

async function param() {
  const c = await connect();
  const r = await c.query('SELECT $1::int + $2::int AS s, $3::text AS t', [40, 2, "x'y"]);
  expect(r.rows[0].s === 42 && r.rows[0].t === "x'y", 'result');
  await c.end();
}

async function prepared() {
  const c = await connect();
  for (let i = 0; i < 12; i++) {
    const r = await c.query({ name: 'drv_named', text: 'SELECT $1::int * 2 AS d, $2::text AS s', values: [i, String(i)] });
    expect(r.rows[0].d === i * 2 && r.rows[0].s === String(i), `execution ${i}`);
  }
  await c.end();
}

async function txnRecovery() {
  const c = await connect();
  await c.query(`INSERT INTO ${T} VALUES (1, 'kept')`);
  await c.query('BEGIN');
  await c.query(`INSERT INTO ${T} VALUES (2, 'rolled back')`);
  try {
    await c.query('SELECT 1/0');
    throw new Failed('division by zero did not fail');
  } catch (e) {
    if (e instanceof Failed) throw e;
    expect(e.code === '22012', `unexpected error ${e.code} ${e.message}`);
  }
  await c.query('ROLLBACK');
  const n = (await c.query(`SELECT count(*)::int AS n FROM ${T}`)).rows[0].n;
  expect(n === 1, `count after rollback = ${n}`);
  await c.end();
}

async function copyIn() {
  const c = await connect();
  const rows = [];
  for (let i = 100; i < 200; i++) rows.push(`${i}\trow${i}\n`);
  await pipeline(Readable.from(rows), c.query(copyFrom(`COPY ${T} (id, v) FROM STDIN`)));
  const n = (await c.query(`SELECT count(*)::int AS n FROM ${T} WHERE id >= 100`)).rows[0].n;
  expect(n === 100, `copied rows = ${n}`);
  await c.end();
}

async function copyOut() {
  const c = await connect();
  let out = '';
  await pipeline(c.query(copyTo(`COPY (SELECT g, 'row' || g FROM generate_series(100, 199) g) TO STDOUT`)),
    new Writable({ write(chunk, _e, cb) { out += chunk.toString(); cb(); } }));
  const lines = out.split('\n').filter((l) => l);
  expect(lines.length === 100 && lines[0] === '100\trow100', `${lines.length} lines, first ${lines[0]}`);
  await c.end();
}

async function cancel() {
  const c = await connect();
  const t0 = Date.now();
  const q = new pg.Query('SELECT pg_sleep(5)');
  const done = new Promise((resolve) => { q.on('error', (e) => resolve(e)); q.on('end', () => resolve(null)); });
  c.query(q);
  await sleep(500);
  // node-postgres' cancel API: a second Client sends the CancelRequest for (pid, secret)
  new pg.Client(cfg).cancel(c, q);
  const err = await Promise.race([done, deadline(4000, 'no answer 4s after the cancel')]);
  expect(err && err.code === '57014', `expected 57014, got ${err ? err.code + ' ' + err.message : 'success'}`);
  const took = (Date.now() - t0) / 1000;
  expect(took < 2.5, `cancel took ${took.toFixed(2)}s`);
  expect((await c.query('SELECT 7 AS x')).rows[0].x === 7, 'query after cancel');
  await c.end();
}

async function notice() {
  const c = await connect();
  const got = [];
  c.on('notice', (n) => got.push(n.message));
  await c.query("DO $$ BEGIN RAISE NOTICE 'hi'; END $$");
  await sleep(50);
  expect(got.length === 1 && got[0] === 'hi', `notices ${JSON.stringify(got)}`);
  await c.end();
}

async function listenNotify() {
  const ch = T + '_ch';
  const lst = await connect();
  const nt = await connect();
  const got = new Promise((resolve) => lst.on('notification', (m) => resolve(m.payload)));
  await lst.query(`LISTEN ${ch}`);
  await nt.query("SELECT pg_notify($1, 'payload')", [ch]);
  const p = await Promise.race([got, deadline(2000, 'no notification within 2s')]);
  expect(p === 'payload', `payload ${p}`);
  await lst.end();
  await nt.end();
}

const SESSION = {};
async function sessionSetSticks() {
  const a = await connect();
  SESSION.a = a;
  await a.query(`SET statement_timeout = '${SESSION_TIMEOUT}'`);
  await a.query("SET application_name = 'drv_sticky'");
  for (let i = 0; i < 3; i++) {
    await a.query('BEGIN');
    const st = (await a.query('SHOW statement_timeout')).rows[0].statement_timeout;
    const an = (await a.query('SHOW application_name')).rows[0].application_name;
    await a.query('COMMIT');
    expect(st === SESSION_TIMEOUT && an === 'drv_sticky', `transaction ${i}: ${st}, ${an}`);
  }
}

async function sessionSetIsolated() {
  try {
    for (let i = 0; i < 5; i++) {
      const c = await connect();
      await c.query('BEGIN'); // a read-write transaction: on the primary
      const st = (await c.query('SHOW statement_timeout')).rows[0].statement_timeout;
      const an = (await c.query('SHOW application_name')).rows[0].application_name;
      await c.query('COMMIT');
      await c.end();
      expect(st !== SESSION_TIMEOUT && an !== 'drv_sticky', `connection ${i} sees another session's settings: statement_timeout=${st} application_name=${an}`);
    }
  } finally {
    if (SESSION.a) { SESSION.a.end().catch(() => {}); delete SESSION.a; }
  }
}

async function manyClients() {
  const client = async (i) => {
    const c = await connect();
    for (let j = 0; j < 3; j++) {
      expect((await c.query('SELECT $1::int + $2::int AS s', [i, j])).rows[0].s === i + j, 'result');
    }
    await c.query(`INSERT INTO ${T} VALUES ($1, 'many')`, [1000 + i]);
    await c.end();
  };
  const res = await Promise.allSettled([...Array(MANY_CLIENTS).keys()].map(client));
  const errs = res.filter((r) => r.status === 'rejected');
  if (errs.length) throw new Failed(`${errs.length}/${MANY_CLIENTS} clients failed; first: ${errs[0].reason.message}`);
  const c = await connect();
  const n = (await c.query(`WITH w AS (UPDATE ${T} SET v = v WHERE false RETURNING 1) SELECT count(*)::int AS n FROM ${T} WHERE v = 'many'`)).rows[0].n;
  await c.end();
  expect(n === MANY_CLIENTS, `rows = ${n}`);
}

// lsnpool reports each commit's LSN as ParameterStatus lsnpool.commit_lsn (asked for through
// the startup `options`); node-postgres emits every ParameterStatus as the connection's
// 'parameterStatus' event. The token, presented on a fresh connection reading under
// `eventual`, must make that read see the commit.
async function commitToken() {
  const w = await connect({ options: '-c lsnpool.report_commit_lsn=on' });
  const params = {};
  w.connection.on('parameterStatus', (m) => { params[m.parameterName] = m.parameterValue; });
  try {
    await w.query(`INSERT INTO ${T} VALUES (${TOKEN_ROW}, '0')`);
    let prev = parseLsn(params[COMMIT_LSN]);
    for (let i = 1; i <= TOKEN_ROUNDS; i++) {
      await w.query(`UPDATE ${T} SET v = $1 WHERE id = ${TOKEN_ROW}`, [String(i)]);
      const token = params[COMMIT_LSN];
      const lsn = parseLsn(token);
      expect(lsn > prev, `commit ${i}: ${COMMIT_LSN} ${token} did not advance`);
      prev = lsn;
      expect((await w.query('SELECT $1::int + 1 AS n', [i])).rows[0].n === i + 1, 'query after the ParameterStatus');
      const r = await connect();
      try {
        if (MODE === 'auto') await r.query("SET lsnpool.consistency = 'eventual'");
        await r.query(`SET lsnpool.min_lsn = '${token}'`);
        const v = (await r.query(`SELECT v FROM ${T} WHERE id = ${TOKEN_ROW}`)).rows[0].v;
        expect(v === String(i), `read with token ${token} saw v = ${v}, not ${i} (stale)`);
      } finally {
        await r.end();
      }
    }
  } finally {
    await w.end();
  }
}

async function cleanup() {
  const c = await connect();
  await c.query(`DROP TABLE IF EXISTS ${T}`);
  await c.end();
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
  if (tokenSkipReason()) b.skip('commit_token', tokenSkipReason());
  else await b.run('commit_token', commitToken);
  await b.run('cleanup', cleanup);
  b.finish();
})();
