// Soak of `ably-tokend dev` (sidecar, embedded broker and development issuer in one process), on
// loopback only and bounded in time. For SOAK_DURATION it keeps
// - CLIENTS slots of real ably-js clients churning (at most CONN_RATE new connections a second):
//   each connects through the sidecar's authUrl
//   (a TokenRequest that ably-js exchanges at the broker), attaches CHANNELS channels, enters
//   presence, publishes, waits for its own message, closes, and starts again;
// - a token-request load in a worker thread: TOKEN_RPS requests/s to GET /api/ably-token, each with
//   another session JWT, each TokenRequest then exchanged at the broker's requestToken (what ably-js
//   does with it), so the broker remembers its nonce and the token;
// and samples the process's RSS (VmRSS from /proc/PID/status) every SAMPLE_SECS. Every failure is
// counted: a client error of any kind, a non-2xx answer, a 42910 anywhere.
//
// Writes OUT_DIR/rss.csv and OUT_DIR/report.md; the last line printed is the verdict. Exit status 0
// only when RSS stayed within 2x of its value at 1 minute and nothing failed.
// Run through benches/soak/run.sh, which builds the release binary and installs `ably`.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

import Ably from "ably";


// ---------------------------------------------------------------------------------------------
// Settings

/** "8m", "90s", "1h" or plain seconds, to milliseconds. */
function durationMs(text) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(text).trim());
  if (!m) throw new Error(`SOAK_DURATION must look like 8m, 90s or 480, not ${JSON.stringify(text)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? "s"];
  return Math.round(Number(m[1]) * unit);
}

function intEnv(name, fallback, min = 1) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer >= ${min}, not ${JSON.stringify(raw)}`);
  return n;
}

// ---------------------------------------------------------------------------------------------
// Token load (worker thread): its own event loop, so it neither slows the clients nor is slowed.

if (!isMainThread) {
  const { sidecar, broker, keyName, sessions, rps, until } = workerData;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const counts = { sent: 0, ok: 0, exchanged: 0, non2xx: {}, errors: {}, code42910: 0 };
  let inFlight = 0;
  let next = 0;

  function request(url, { method = "GET", headers = {}, body } = {}) {
    return new Promise((resolve, reject) => {
      const req = http.request(url, { method, headers, agent, timeout: 10_000 }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      });
      req.on("timeout", () => req.destroy(new Error("timed out after 10 s")));
      req.on("error", reject);
      if (body) req.write(body);
      req.end();
    });
  }

  function refused(where, res) {
    const key = `${where} ${res.status}`;
    counts.non2xx[key] = (counts.non2xx[key] ?? 0) + 1;
    if (/42910/.test(res.body)) counts.code42910 += 1;
  }

  async function one(session) {
    const issued = await request(`${sidecar}/api/ably-token`, { headers: { authorization: `Bearer ${session}` } });
    if (issued.status < 200 || issued.status > 299) return refused("sidecar", issued);
    counts.ok += 1;
    const exchanged = await request(`${broker}/keys/${encodeURIComponent(keyName)}/requestToken`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: issued.body,
    });
    if (exchanged.status < 200 || exchanged.status > 299) return refused("broker requestToken", exchanged);
    counts.exchanged += 1;
  }

  // Open loop: every 10 ms, the requests due by now are started, whatever the server does, up to
  // 256 in flight (beyond that the server is not keeping up: the shortfall shows in the rate).
  const started = Date.now();
  const timer = setInterval(() => {
    const now = Date.now();
    if (now >= until) {
      clearInterval(timer);
      const wait = setInterval(() => {
        if (inFlight === 0 || Date.now() > until + 15_000) {
          clearInterval(wait);
          parentPort.postMessage({ done: true, counts });
        }
      }, 50);
      return;
    }
    const due = Math.floor(((now - started) / 1000) * rps);
    while (counts.sent < due && inFlight < 256) {
      const session = sessions[next++ % sessions.length];
      counts.sent += 1;
      inFlight += 1;
      one(session)
        .catch((e) => {
          const key = e.code ?? e.message;
          counts.errors[key] = (counts.errors[key] ?? 0) + 1;
        })
        .finally(() => {
          inFlight -= 1;
        });
    }
  }, 10);
  const report = setInterval(() => parentPort.postMessage({ counts }), 1000);
  report.unref();
} else {
  await main();
}

// ---------------------------------------------------------------------------------------------
// Main thread: the stack, the churning clients, the RSS samples, the report.

async function main() {
  const stackLib = await import("../../tests/support/node/stack.mjs");
  const DURATION_MS = durationMs(process.env.SOAK_DURATION ?? "8m");
  const CLIENTS = intEnv("CLIENTS", 50);
  const CHANNELS = intEnv("CHANNELS", 3);
  const TOKEN_RPS = intEnv("TOKEN_RPS", 500, 0);
  const CONN_RATE = intEnv("CONN_RATE", 150);
  const SAMPLE_SECS = intEnv("SAMPLE_SECS", 5);
  const SESSIONS = intEnv("SESSIONS", 1000);
  const REST_SECS = intEnv("REST_SECS", 150, 0);
  const OUT_DIR = process.env.OUT_DIR ?? path.join(stackLib.ROOT, "target/soak");
  const STEP_MS = 10_000; // every step of a client's cycle is bounded
  // The reference RSS: at 1 minute, or half-way through a run shorter than 2 minutes.
  const REF_MS = Math.min(60_000, Math.floor(DURATION_MS / 2));

  fs.mkdirSync(OUT_DIR, { recursive: true });
  const stack = await stackLib.startStack({});
  const pid = stack.proc.pid;
  const rssKb = () => {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) : NaN;
  };
  const keyName = stack.apiKey.split(":")[0];
  const brokerUrl = `http://${stack.broker.host}:${stack.broker.port}`;
  log(`ably-tokend dev pid ${pid}: sidecar ${stack.sidecar}, broker ${brokerUrl}; RSS ${mb(rssKb())} MB`);

  // Session JWTs from the development issuer: one per churn slot (support role: it may publish)
  // and SESSIONS distinct ones for the token load. Two hours, so none expires during a run.
  const mint = (sub, roles) =>
    stackLib.mintSession(stack, sub, { roles, ttl: "7200" }, { ms: 10_000, explain: () => stack.stderr.text(20) });
  const slotSessions = [];
  for (let i = 0; i < CLIENTS; i++) slotSessions.push(await mint(`soak-client-${i}`, "support"));
  const loadSessions = [];
  for (let i = 0; i < SESSIONS; i++) loadSessions.push(await mint(`soak-load-${i}`, i % 4 === 0 ? "support" : ""));

  const failures = new Map(); // reason -> count
  const fail = (reason) => failures.set(reason, (failures.get(reason) ?? 0) + 1);
  const errorLog = new stackLib.Tail(50);
  const counts = { connections: 0, cycles: 0, attaches: 0, presence: 0, published: 0, received: 0 };

  const t0 = Date.now();
  const until = t0 + DURATION_MS;
  const rss0 = rssKb();

  // Token load.
  let tokenCounts = { sent: 0, ok: 0, exchanged: 0, non2xx: {}, errors: {}, code42910: 0 };
  let tokenDone = TOKEN_RPS === 0 ? Promise.resolve() : null;
  if (TOKEN_RPS > 0) {
    const worker = new Worker(fileURLToPath(import.meta.url), {
      workerData: { sidecar: stack.sidecar, broker: brokerUrl, keyName, sessions: loadSessions, rps: TOKEN_RPS, until },
    });
    tokenDone = new Promise((resolve, reject) => {
      worker.on("message", (m) => {
        tokenCounts = m.counts;
        if (m.done) {
          worker.terminate().then(resolve, resolve);
        }
      });
      worker.on("error", reject);
    });
  }

  // One churn slot: cycles until the deadline.
  async function cycle(slot, n) {
    const sub = `soak-client-${slot}`;
    const client = new Ably.Realtime({
      endpoint: stack.broker.host,
      port: stack.broker.port,
      tls: false,
      fallbackHosts: [],
      disableConnectivityCheck: true,
      wsConnectivityCheckUrl: `ws://${stack.broker.host}:${stack.broker.port}/`,
      authUrl: `${stack.sidecar}/api/ably-token`,
      authHeaders: { Authorization: `Bearer ${slotSessions[slot]}` },
      logLevel: 1,
      logHandler: (msg) => errorLog.push(`${sub}: ${msg}`),
    });
    const bounded = (promise, what) =>
      stackLib.within(promise, `${what} (${sub})`, { ms: STEP_MS });
    let closing = false;
    client.connection.on((change) => {
      if (closing) return;
      if (["disconnected", "suspended", "failed"].includes(change.current)) {
        fail(`connection ${change.current}${change.reason ? ` (${change.reason.code})` : ""}`);
        if (change.reason) errorLog.push(`${sub}: ${change.current}: ${change.reason.code} ${change.reason.message}`);
      }
    });
    try {
      await bounded(client.connection.whenState("connected"), "connected");
      counts.connections += 1;
      const channels = [];
      for (let c = 0; c < CHANNELS; c++) {
        const channel = client.channels.get(`orders:${sub}:${c}`);
        await bounded(channel.attach(), `attach ${channel.name}`);
        counts.attaches += 1;
        channels.push(channel);
      }
      const [first] = channels;
      await bounded(first.presence.enter({ n }), "presence enter");
      counts.presence += 1;
      const got = new Promise((resolve) => first.subscribe("tick", (m) => m.data?.n === n && resolve()));
      await bounded(first.publish("tick", { n }), "publish");
      counts.published += 1;
      await bounded(got, "its own message back");
      counts.received += 1;
    } catch (error) {
      fail(error.code ? `ably error ${error.code}` : error.message.split("\n")[0].replace(/ \(soak-client-\d+\)/, ""));
      errorLog.push(`${sub}: ${error.message.split("\n")[0]}`);
    } finally {
      closing = true;
      const state = client.connection.state;
      if (!["closed", "failed"].includes(state)) {
        const closed = new Promise((resolve) => {
          client.connection.once("closed", resolve);
          client.connection.once("failed", resolve);
        });
        client.close();
        await stackLib.within(closed, "closed", { ms: STEP_MS }).catch(() => fail("close timed out"));
      }
      counts.cycles += 1;
    }
  }

  // Each slot starts a cycle at most every CLIENTS / CONN_RATE seconds, so the slots together open
  // at most CONN_RATE connections a second however fast the machine is.
  const minCycleMs = (CLIENTS * 1000) / CONN_RATE;
  async function slotLoop(slot) {
    // Stagger the start so the slots do not move in lock-step.
    await sleep(Math.floor((slot * minCycleMs) / CLIENTS));
    for (let n = 0; Date.now() < until; n++) {
      const started = Date.now();
      await cycle(slot, n);
      const left = started + minCycleMs - Date.now();
      if (left > 0 && Date.now() + left < until) await sleep(left);
    }
  }

  // RSS samples.
  const samples = [];
  let lastConnections = 0;
  let lastTokens = 0;
  let lastAt = t0;
  const sample = () => {
    const now = Date.now();
    const dt = (now - lastAt) / 1000 || 1;
    const row = {
      t: Math.round((now - t0) / 1000),
      rssKb: rssKb(),
      connPerSec: (counts.connections - lastConnections) / dt,
      tokenPerSec: (tokenCounts.ok - lastTokens) / dt,
      connections: counts.connections,
      tokens: tokenCounts.ok,
      failures: totalFailures(),
    };
    lastConnections = counts.connections;
    lastTokens = tokenCounts.ok;
    lastAt = now;
    samples.push(row);
    log(
      `t=${String(row.t).padStart(4)} s  RSS ${mb(row.rssKb).padStart(6)} MB  ` +
        `connections/s ${row.connPerSec.toFixed(0).padStart(4)}  tokens/s ${row.tokenPerSec.toFixed(0).padStart(4)}  failures ${row.failures}`,
    );
  };
  const totalFailures = () =>
    [...failures.values()].reduce((a, b) => a + b, 0) +
    Object.values(tokenCounts.non2xx).reduce((a, b) => a + b, 0) +
    Object.values(tokenCounts.errors).reduce((a, b) => a + b, 0);

  samples.push({ t: 0, rssKb: rss0, connPerSec: 0, tokenPerSec: 0, connections: 0, tokens: 0, failures: 0 });
  const sampler = setInterval(sample, SAMPLE_SECS * 1000);
  log(`soak: ${DURATION_MS / 1000} s, ${CLIENTS} churning clients x ${CHANNELS} channels (at most ${CONN_RATE} connections/s), ${TOKEN_RPS} token requests/s`);

  await Promise.all(Array.from({ length: CLIENTS }, (_, slot) => slotLoop(slot)));
  await tokenDone;
  const loadEnd = samples.length;
  const loadElapsed = (Date.now() - t0) / 1000;
  // Then REST_SECS with no load, still sampled: what the broker keeps once the churn stops, after
  // the 2-minute windows (TokenRequest nonces, idempotency ids, resumable connections) run out.
  if (REST_SECS > 0) {
    log(`load over; ${REST_SECS} s with no load`);
    await sleep(REST_SECS * 1000);
  }
  clearInterval(sampler);
  if (Date.now() - lastAt >= 1000) sample();
  else samples[samples.length - 1].rssKb = rssKb();
  const elapsed = loadElapsed;
  const alive = !stack.exited;
  const exit = await stackLib.stopProcess(stack);
  if (!alive) fail(`ably-tokend exited during the run (${JSON.stringify(exit)})`);

  // Verdict.
  const loadSamples = samples.slice(0, Math.max(loadEnd, 1));
  const ref = loadSamples.find((s) => s.t * 1000 >= REF_MS) ?? loadSamples[loadSamples.length - 1];
  const after = loadSamples.filter((s) => s.t >= ref.t);
  const peak = Math.max(...after.map((s) => s.rssKb));
  const end = loadSamples[loadSamples.length - 1];
  const rested = samples[samples.length - 1];
  const flat = peak <= 2 * ref.rssKb;
  const code42910 = tokenCounts.code42910 + (failures.get("ably error 42910") ?? 0);
  const nFailures = totalFailures();
  const tokenFailureRows = [
    ...Object.entries(tokenCounts.non2xx).map(([k, v]) => [`token load: ${k}`, v]),
    ...Object.entries(tokenCounts.errors).map(([k, v]) => [`token load: ${k}`, v]),
  ];
  const failureRows = [...failures.entries(), ...tokenFailureRows];
  const verdict =
    `RSS flat within 2× of its value at ${ref.t} s: ${flat ? "yes" : "no"} ` +
    `(${mb(ref.rssKb)} MB then, peak ${mb(peak)} MB after, ${mb(end.rssKb)} MB at the end of the load` +
    `${REST_SECS > 0 ? `, ${mb(rested.rssKb)} MB after ${REST_SECS} s with no load; ${mb(rss0)} MB at the start` : ""}); ` +
    `failures: ${nFailures}${code42910 ? ` (42910: ${code42910})` : ""}`;

  const csv = ["t_s,rss_kb,connections_per_s,tokens_per_s,connections_total,tokens_total,failures"]
    .concat(samples.map((s) => [s.t, s.rssKb, s.connPerSec.toFixed(1), s.tokenPerSec.toFixed(1), s.connections, s.tokens, s.failures].join(",")))
    .join("\n");
  fs.writeFileSync(path.join(OUT_DIR, "rss.csv"), `${csv}\n`);
  const relative = path.relative(stackLib.ROOT, path.join(OUT_DIR, "rss.csv"));
  const csvPath = relative.startsWith("..") ? path.join(OUT_DIR, "rss.csv") : relative;

  const rows = samples
    .filter((s, i) => i === 0 || i === samples.length - 1 || s.t % 30 < SAMPLE_SECS)
    .map((s) => `| ${s.t} | ${mb(s.rssKb)} | ${s.connPerSec.toFixed(0)} | ${s.tokenPerSec.toFixed(0)} | ${s.failures} |`);
  const report = [
    "# ably-tokend dev soak",
    "",
    `${elapsed.toFixed(0)} s; ${CLIENTS} churning ably-js ${ablyVersion()} clients (Node ${process.version}), each cycle: connect through the authUrl, attach ${CHANNELS} channels, enter presence, publish, receive, close (at most ${CONN_RATE} connections/s); token load ${TOKEN_RPS}/s offered (sidecar TokenRequest + broker requestToken, ${SESSIONS} distinct sessions).`,
    "",
    "| t (s) | RSS (MB) | connections/s | tokens/s | failures so far |",
    "|---:|---:|---:|---:|---:|",
    ...rows,
    "",
    `Totals: ${counts.connections} connections (${(counts.connections / elapsed).toFixed(0)}/s), ${counts.attaches} attaches, ` +
      `${counts.presence} presence enters, ${counts.published} publishes, ${counts.received} received back; ` +
      `token load: ${tokenCounts.sent} sent, ${tokenCounts.ok} issued (${(tokenCounts.ok / elapsed).toFixed(0)}/s), ${tokenCounts.exchanged} exchanged at the broker.`,
    "",
    failureRows.length ? "Failures:\n\n" + failureRows.map(([k, v]) => `- ${k}: ${v}`).join("\n") : "Failures: none.",
    "",
    `RSS at start ${mb(rss0)} MB; every sample in ${csvPath}.`,
    "",
    `**${verdict}**`,
    "",
  ].join("\n");
  fs.writeFileSync(path.join(OUT_DIR, "report.md"), report);
  if (errorLog.lines.length) {
    log("last client errors:");
    for (const line of errorLog.lines.slice(-10)) log(`  ${line}`);
  }
  process.stdout.write(`\n${report}\n`);
  console.log(verdict);
  process.exit(flat && nFailures === 0 ? 0 : 1);
}

/** The installed `ably` package's version, as npm ci put it in node_modules. */
function ablyVersion() {
  try {
    const url = new URL("./node_modules/ably/package.json", import.meta.url);
    return JSON.parse(fs.readFileSync(url, "utf8")).version;
  } catch {
    return "(version unknown)";
  }
}

function mb(kb) {
  return (kb / 1024).toFixed(1);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function log(line) {
  process.stderr.write(`[soak] ${line}\n`);
}
