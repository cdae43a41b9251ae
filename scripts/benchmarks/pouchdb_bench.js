// PouchDB side of scripts/benchmarks/pouchdb.py (run by it; not on its own).
//
//   node pouchdb_bench.js driver DIR N LIVE_N   runs the scenarios, prints one JSON line
//   node pouchdb_bench.js source DIR N          (spawned by the driver) express-pouchdb over LevelDB
//
// The packages come from BENCH_NODE_DIR (bench-out/pouchdb), installed there by pouchdb.py.
// Clock: process.hrtime (CLOCK_MONOTONIC, the same clock in both processes).
'use strict';

const path = require('path');
const http = require('http');
const readline = require('readline');
const { spawn } = require('child_process');
const { createRequire } = require('module');

const NODE_DIR = process.env.BENCH_NODE_DIR;
if (!NODE_DIR) {
  console.error('BENCH_NODE_DIR is not set (run scripts/bench pouchdb)');
  process.exit(2);
}
const req = createRequire(path.join(NODE_DIR, 'package.json'));
const PouchDB = req('pouchdb');
const nodeFetch = req('node-fetch');

const TEXT = 'lorem ipsum dolor sit amet '.repeat(40);   // as scripts/benchmarks/sync.py
// an account id has the shape of shiftpeer's (base32 of a 32-byte key, 52 characters)
const AUTHOR = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567ABCDEFGHIJKLMNOPQRST';
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;

function shift(i, t) {
  const doc = {
    _id: 'shift-' + String(i).padStart(8, '0'),
    author: AUTHOR, type: 'shift', space: 'notes', href: `http://example.com/p${i % 500}`,
    created: 1700000000 + i, summary: `shift ${i}`, content: { text: TEXT },
  };
  if (t !== undefined) doc.t = t;
  return doc;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------ source process
async function sourceMain(dir, n) {
  const express = req('express');
  const expressPouchDB = req('express-pouchdb');
  require('fs').mkdirSync(path.join(dir, 'source'), { recursive: true });
  const Server = PouchDB.defaults({ prefix: path.join(dir, 'source') + path.sep });
  let db = null;
  let count = 0;
  let liveCount = 0;
  async function add(k) {
    for (let done = 0; done < k;) {
      const m = Math.min(5000, k - done);
      const docs = [];
      for (let j = 0; j < m; j++) docs.push(shift(count++));
      const res = await db.bulkDocs(docs);
      if (res.some((r) => r.error)) throw new Error('bulkDocs failed on the source');
      done += m;
    }
  }
  const app = express();
  app.use('/', expressPouchDB(Server, {
    mode: 'minimumForPouchDB',
    logPath: path.join(dir, 'express-pouchdb.log'),
    configPath: path.join(dir, 'express-pouchdb.json'),
  }));
  const server = http.createServer(app);
  // bytes on the wire (HTTP over TCP, both directions), counted per socket
  const sockets = new Set();
  let closedBytes = 0;
  server.on('connection', (s) => {
    s.setNoDelay(true);
    sockets.add(s);
    s.on('close', () => { closedBytes += s.bytesRead + s.bytesWritten; sockets.delete(s); });
  });
  const totalBytes = () => {
    let t = closedBytes;
    for (const s of sockets) t += s.bytesRead + s.bytesWritten;
    return t;
  };
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = server.address().port;
  // created over HTTP, so that express-pouchdb lists it (its all-dbs registry), then filled directly
  const created = await nodeFetch(`http://127.0.0.1:${port}/master`, { method: 'PUT' });
  if (created.status !== 201) throw new Error('could not create the database: HTTP ' + created.status);
  db = new Server('master');
  const t0 = nowMs();
  await add(n);
  const fillS = (nowMs() - t0) / 1000;
  process.stdout.write(JSON.stringify({ port, fill_s: fillS }) + '\n');
  const send = (line) => process.stdout.write(line + '\n');
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', async (line) => {
    const [cmd, ...args] = line.trim().split(/\s+/);
    try {
      if (cmd === 'add') {
        await add(parseInt(args[0], 10));
        send('ok');
      } else if (cmd === 'bytes') {
        send(String(totalBytes()));
      } else if (cmd === 'live') {
        const k = parseInt(args[0], 10);
        const gapMs = parseFloat(args[1]) * 1000;
        for (let i = 0; i < k; i++) {
          liveCount += 1;
          await db.put(shift(10000000 + liveCount, nowMs()));
          if (i + 1 < k) await sleep(gapMs);
        }
        send('ok');
      } else if (cmd === 'quit') {
        for (const s of sockets) s.destroy();
        server.close();
        await db.close();
        process.exit(0);
      } else {
        send('error unknown command');
      }
    } catch (e) {
      send('error ' + String(e && e.message).replace(/\n/g, ' '));
    }
  });
  rl.on('close', () => process.exit(0));   // the driver went away
}

// ------------------------------------------------------------------------------------------ driver (receiver)
async function driverMain(dir, n, liveN) {
  const child = spawn(process.execPath, [__filename, 'source', dir, String(n)], {
    stdio: ['pipe', 'pipe', 'inherit'], env: process.env,
  });
  const lines = [];
  const waiters = [];
  readline.createInterface({ input: child.stdout }).on('line', (l) => {
    if (waiters.length) waiters.shift()(l); else lines.push(l);
  });
  let childExited = false;
  child.on('exit', (code) => {
    childExited = true;
    while (waiters.length) waiters.shift()('error source exited with ' + code);
  });
  const readLine = (timeoutMs) => new Promise((resolve, reject) => {
    if (lines.length) return resolve(lines.shift());
    if (childExited) return reject(new Error('source process exited'));
    const timer = setTimeout(() => reject(new Error('source did not answer in time')), timeoutMs);
    waiters.push((l) => { clearTimeout(timer); resolve(l); });
  });
  const command = async (line, timeoutMs = 120000) => {
    child.stdin.write(line + '\n');
    const answer = await readLine(timeoutMs);
    if (answer.startsWith('error')) throw new Error('source: ' + answer);
    return answer;
  };

  // a request of the replicator's that fails after its replication finished is reported, not fatal
  let stray = 0;
  process.on('unhandledRejection', (e) => {
    stray += 1;
    console.error('warning: unhandled rejection (counted in stray_errors):', e && e.message);
  });
  try {
    const info = JSON.parse(await readLine(900000));
    const url = `http://127.0.0.1:${info.port}/master`;
    const results = { docs: n, source_fill_s: Math.round(info.fill_s * 100) / 100 };
    const local = new PouchDB(path.join(dir, 'receiver'));

    // one "connection": a keep-alive agent of its own, destroyed to disconnect
    const connect = () => {
      const agent = new http.Agent({ keepAlive: true });
      const remote = new PouchDB(url, {
        fetch: (u, o) => nodeFetch(u, Object.assign({}, o, { agent })),
        skip_setup: true,
      });
      // disconnect once the replicator's requests in flight (e.g. its background info()) have ended
      const close = async () => {
        const until = nowMs() + 3000;
        while (Object.keys(agent.sockets).length && nowMs() < until) await sleep(5);
        agent.destroy();
      };
      return { remote, agent, close };
    };
    const replicateOnce = async (remote) => {
      const res = await local.replicate.from(remote);   // PouchDB defaults: batch_size 100, batches_limit 10
      if (!res.ok || res.doc_write_failures) throw new Error('replication failed: ' + JSON.stringify(res));
      return res;
    };

    // (a) one-shot pull into an empty database
    const cpu0 = process.cpuUsage();
    let t0 = nowMs();
    let conn = connect();
    await replicateOnce(conn.remote);
    let dt = (nowMs() - t0) / 1000;
    const cpu1 = process.cpuUsage(cpu0);
    let count = (await local.info()).doc_count;
    if (count !== n) throw new Error(`pulled ${count} docs, expected ${n}`);
    results.pull_s = Math.round(dt * 1000) / 1000;
    results.pull_docs_per_s = Math.round(n / dt);
    results.pull_receiver_cpu_s = Math.round((cpu1.user + cpu1.system) / 1e4) / 100;

    // (b) 1,000 more, on the same connection
    await command('add 1000');
    t0 = nowMs();
    await replicateOnce(conn.remote);
    results.incremental_1000_s = Math.round((nowMs() - t0) / 1000 * 1e4) / 1e4;
    count = (await local.info()).doc_count;
    if (count !== n + 1000) throw new Error(`have ${count} docs after the increment, expected ${n + 1000}`);
    await conn.close();
    await sleep(100);

    // (c) no-op reconnect (median of 5): new TCP connection(s), replicate, nothing to do
    const times = [];
    const bytes = [];
    for (let i = 0; i < 5; i++) {
      const b0 = parseInt(await command('bytes'), 10);
      t0 = nowMs();
      conn = connect();
      const res = await replicateOnce(conn.remote);
      times.push(nowMs() - t0);
      if (res.docs_written !== 0) throw new Error('no-op replication wrote documents');
      const b1 = parseInt(await command('bytes'), 10);
      bytes.push(b1 - b0);
      await conn.close();
      await sleep(100);
    }
    times.sort((a, b) => a - b);
    results.noop_reconnect_ms = Math.round(times[2] * 100) / 100;
    results.noop_reconnect_bytes = Math.max(...bytes);

    // (d) live: continuous replication; a write on the source until the replicator has written it here.
    // First as scripts/bench sync does (writes 3 ms apart), then spaced 50 ms apart (no backlog can form).
    const livePhase = async (k, gapS, prefix) => {
      conn = connect();
      const lat = [];
      const rep = local.replicate.from(conn.remote, { live: true, retry: false });
      let repError = null;
      rep.on('error', (e) => { repError = e; });
      rep.on('change', (c) => {
        const now = nowMs();
        for (const d of c.docs || []) if (typeof d.t === 'number') lat.push(now - d.t);
      });
      await new Promise((resolve, reject) => {     // caught up
        const timer = setTimeout(() => reject(new Error('live replication did not catch up')), 60000);
        rep.once('paused', () => { clearTimeout(timer); resolve(); });
      });
      await command(`live ${k} ${gapS}`, 600000);
      const deadline = nowMs() + 10000;
      while (lat.length < k && nowMs() < deadline && !repError) await sleep(10);
      rep.cancel();
      await conn.close();
      if (repError) throw repError;
      lat.sort((a, b) => a - b);
      results[prefix + 'writes'] = lat.length;
      if (!lat.length) throw new Error('no live write arrived');
      const median = lat.length % 2 ? lat[(lat.length - 1) / 2]
        : (lat[lat.length / 2 - 1] + lat[lat.length / 2]) / 2;
      results[prefix + 'p50_ms'] = Math.round(median * 1000) / 1000;
      results[prefix + 'p99_ms'] = Math.round(lat[Math.min(lat.length - 1, Math.floor(lat.length * 0.99))] * 1000) / 1000;
      await sleep(200);
    };
    await livePhase(liveN, 0.003, 'live_');
    await livePhase(Math.min(liveN, 200), 0.05, 'live_spaced50_');
    await local.close();
    results.stray_errors = stray;
    process.stdout.write(JSON.stringify(results) + '\n');
  } finally {
    if (!childExited) {
      child.stdin.write('quit\n');
      const t = setTimeout(() => child.kill('SIGKILL'), 10000);
      await new Promise((r) => child.once('exit', r));
      clearTimeout(t);
    }
  }
}

const [mode, dir, nArg, liveArg] = process.argv.slice(2);
const main = mode === 'source' ? sourceMain(dir, parseInt(nArg, 10))
  : mode === 'driver' ? driverMain(dir, parseInt(nArg, 10), parseInt(liveArg, 10))
    : Promise.reject(new Error('usage: pouchdb_bench.js driver|source DIR N [LIVE_N]'));
main.then(() => { if (mode === 'driver') process.exit(0); }, (e) => {
  console.error(e && e.stack ? e.stack : e, JSON.stringify(e));
  process.exit(1);
});
