// Shared scaffolding for the end-to-end suite: the real `ably-tokend dev` binary (sidecar, embedded
// broker and development issuer sharing one generated API key), the real, unmodified `ably` npm
// client pointed at it, and bounded waits so that no test can hang.
//
// Every wait here has a deadline. When one expires, the error names what was awaited and appends
// what happened around it: the tail of the binary's stderr and the tail of each Ably client's own
// log (at micro level, which includes the protocol frames it sent and received), so a failure
// explains itself to whoever is working on the broker.

import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";

import Ably from "ably";

import * as shared from "../support/node/stack.mjs";

export { Ably };

const here = path.dirname(fileURLToPath(import.meta.url));

/** Path of a fixture file (policies) under tests/e2e/fixtures. */
export const fixture = (name) => path.join(here, "fixtures", name);

export const WAIT_MS = 10_000;
export const CLOSE_MS = 5_000;

/** `E2E_VERBOSE=1` copies the binary's stderr and every client's log to this process's stderr. */
const VERBOSE = process.env.E2E_VERBOSE === "1";

// ---------------------------------------------------------------------------------------------
// Bounded waiting and diagnostics

/** What went on lately, appended to every timeout error. */
export function diagnostics(clients = []) {
  const parts = [];
  for (const stack of shared.runningStacks()) {
    parts.push(`--- ably-tokend stderr (last lines) ---\n${stack.stderr.text(40) || "(empty)"}`);
  }
  for (const client of clients) {
    const e2e = client?.e2e;
    if (!e2e) continue;
    const state = client.connection ? ` state=${client.connection.state}` : "";
    parts.push(`--- ably client ${e2e.label}${state} (last log lines) ---\n${e2e.log.text(40) || "(empty)"}`);
  }
  return parts.join("\n");
}

/** Resolve with `promise`, or reject after `ms` naming `what` and the recent diagnostics. */
export function within(promise, what, { ms = WAIT_MS, clients = [] } = {}) {
  return shared.within(promise, what, { ms, explain: () => diagnostics(clients) });
}

/** Poll `predicate` every 25 ms until it is truthy; bounded. Returns its value. */
export async function until(predicate, what, { ms = WAIT_MS, clients = [] } = {}) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}\n${diagnostics(clients)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Resolve with what `promise` rejected with; fail if it resolves or takes longer than `ms`. */
export async function rejection(promise, what, opts) {
  const outcome = await within(
    promise.then(
      (value) => ({ ok: true, value }),
      (error) => ({ ok: false, error }),
    ),
    what,
    opts,
  );
  if (outcome.ok) {
    throw new Error(`expected ${what} to be refused, but it succeeded with ${JSON.stringify(outcome.value)}`);
  }
  return outcome.error;
}

// ---------------------------------------------------------------------------------------------
// The binary

/**
 * Start `ably-tokend dev --port 0 --broker-port 0 --json [--policy FILE]` and wait (bounded) for
 * its one JSON ready line on stdout.
 */
export async function startStack({ policy, args = [] } = {}) {
  const stack = await shared.startStack({
    args: [...(policy ? ["--policy", policy] : []), ...args],
    verbose: VERBOSE,
  });
  return Object.assign(stack, {
    clients: new Set(),
    keyName: stack.apiKey.split(":")[0],
    stop: () => stopStack(stack),
  });
}

/**
 * Close every client made for this stack (each awaited, bounded), then SIGTERM the binary and
 * await its exit. Returns how it exited; throws when it had to be killed.
 */
export async function stopStack(stack) {
  if (!stack) return null; // start-up failed; nothing to stop
  await Promise.all([...stack.clients].map((client) => closeClient(client).catch(() => {})));
  stack.clients.clear();
  const started = Date.now();
  const exit = await shared.stopProcess(stack);
  if (exit.signal === "SIGKILL") {
    throw new Error(
      `ably-tokend did not exit within ${shared.EXIT_MS} ms of SIGTERM and was killed\n${stack.stderr.text(40)}`,
    );
  }
  assertNoSecretsLogged(stack);
  return { ...exit, ms: Date.now() - started };
}

export const assertNoSecretsLogged = shared.assertNoSecretsLogged;

/**
 * One stack for the enclosing `describe`: started in a `before` hook and stopped in an `after`
 * hook (so its clients are closed and its log is checked for secrets once all its tests are done).
 * Returns an accessor, since the stack exists only once the hook has run: `realtime(stack(), …)`.
 */
export function useStack(options) {
  let stack;
  before(async () => {
    stack = await startStack(options);
  });
  after(async () => {
    await stopStack(stack);
  });
  return () => stack;
}

// ---------------------------------------------------------------------------------------------
// Sessions and clients

/** A session JWT for `sub` with `roles` from the development issuer. */
export function mintSession(stack, sub, roles = [], ttlSecs = 3600) {
  const params = { roles: roles.join(","), ttl: String(ttlSecs) };
  return shared.mintSession(stack, sub, params, { ms: WAIT_MS, explain: () => diagnostics() });
}

/** The sidecar route ably-js uses as authUrl: "token" → TokenRequest, "jwt" → Ably JWT. */
export function authUrlFor(stack, mode = "token") {
  if (mode === "token") return `${stack.sidecar}/api/ably-token`;
  if (mode === "jwt") return `${stack.sidecar}/api/ably-jwt`;
  throw new Error(`unknown auth mode ${mode}`);
}

const PROTOCOLS = { msgpack: true, json: false };
/** The two wire formats the Node client speaks: msgpack (its default) and JSON. */
export const protocols = Object.keys(PROTOCOLS);

function logCapture(label) {
  const log = new shared.Tail(300);
  return {
    log,
    logLevel: 4, // micro: includes every protocol message sent and received
    logHandler: (msg) => {
      log.push(`${new Date().toISOString().slice(11, 23)} ${msg}`);
      if (VERBOSE) process.stderr.write(`[${label}] ${msg}\n`);
    },
  };
}

/** Options every client gets: the broker on loopback, plain ws/http, no Ably host ever contacted. */
function brokerOptions(stack, protocol) {
  if (!(protocol in PROTOCOLS)) throw new Error(`unknown protocol ${protocol}`);
  return {
    endpoint: stack.broker.host,
    port: stack.broker.port,
    tls: false,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    // When a socket is slow to open (4 s, e.g. on a loaded CI machine) ably-js
    // also probes a WebSocket host that disableConnectivityCheck does not
    // cover; point it at the broker so nothing leaves loopback.
    wsConnectivityCheckUrl: `ws://${stack.broker.host}:${stack.broker.port}/`,
    useBinaryProtocol: PROTOCOLS[protocol],
  };
}

// ---------------------------------------------------------------------------------------------
// `ably-tokend broker` on its own (no sidecar), for the files that configure it themselves

/**
 * Runs `ably-tokend broker` on a free port: with `config` (TOML; written to a fresh temporary
 * directory and passed as `--config`), then `args`. The environment is this process's without
 * ABLY_API_KEY (refused beside [[ably.keys]]) and ABLY_TOKEND_* (the harness's ABLY_TOKEND_BIN among
 * them, which would be read as settings), with NO_COLOR=1 and `env`. `name` is "broker", or
 * "sandbox" for `--sandbox`: the JSON log line whose message starts with `<name> listening` gives
 * the port. Resolves with {name, proc, port, log (the output's last 200 lines), text() (all of it),
 * exited, dir}; rejects if the process exits before that line.
 */
export async function startBroker({ config, args = [], env = {}, name = "broker" } = {}) {
  let dir;
  const argv = ["broker"];
  if (config !== undefined) {
    dir = mkdtempSync(path.join(tmpdir(), "tokend-broker-"));
    const file = path.join(dir, "broker.toml");
    writeFileSync(file, config);
    argv.push("--config", file);
  }
  argv.push(...args);
  const childEnv = Object.fromEntries(
    Object.entries(process.env).filter(([key]) => key !== "ABLY_API_KEY" && !key.startsWith("ABLY_TOKEND_")),
  );
  Object.assign(childEnv, { NO_COLOR: "1" }, env);
  const proc = spawn(shared.BINARY, argv, { cwd: shared.ROOT, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  const log = new shared.Tail(200);
  let text = "";
  const port = new Promise((resolve, reject) => {
    let buffer = "";
    const onData = (chunk) => {
      text += chunk;
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        log.push(line);
        try {
          const entry = JSON.parse(line);
          const fields = entry.fields ?? entry;
          if (String(fields.message).startsWith(`${name} listening`)) resolve(fields.port);
        } catch {
          // not a JSON log line
        }
      }
    };
    proc.stdout.setEncoding("utf8").on("data", onData);
    proc.stderr.setEncoding("utf8").on("data", onData);
    proc.on("exit", (code) => reject(new Error(`the ${name} exited (${code}) before listening:\n${log.text()}`)));
  });
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  const listening = await within(port, `the ${name}'s listening line`);
  return { name, proc, port: listening, log, text: () => text, exited, dir };
}

/** SIGTERM to a broker from startBroker (if it started), a bounded wait for its exit, its directory removed. */
export async function stopBroker(broker) {
  if (!broker) return;
  broker.proc.kill("SIGTERM");
  await within(broker.exited, `the ${broker.name} to exit`);
  if (broker.dir) rmSync(broker.dir, { recursive: true, force: true });
}

/** Options for a client with `key` to a broker on loopback `port`, plain ws/http, no Ably host contacted; `more` added. */
export function keyClientOptions(port, key, more = {}) {
  return {
    key,
    endpoint: "127.0.0.1",
    port,
    tls: false,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    wsConnectivityCheckUrl: `ws://127.0.0.1:${port}/`,
    ...more,
  };
}

/**
 * A Realtime client that authenticates as `sub` through the sidecar's authUrl, the way a browser
 * does: `authUrl` + `authHeaders: { Authorization: "Bearer <session JWT>" }`.
 *
 * opts: sub, roles, mode ("token" | "jwt"), protocol ("msgpack" | "json"), authUrl (overrides the
 * sidecar route, e.g. a counting proxy), authParams, session (a ready session JWT), options (extra
 * client options).
 */
export async function realtime(stack, opts) {
  const { sub, roles = [], mode = "token", protocol = "msgpack", authParams, options = {} } = opts;
  const session = opts.session ?? (await mintSession(stack, sub, roles));
  const label = `${sub}/${mode}/${protocol}`;
  const capture = logCapture(label);
  const client = new Ably.Realtime({
    ...brokerOptions(stack, protocol),
    authUrl: opts.authUrl ?? authUrlFor(stack, mode),
    authHeaders: { Authorization: `Bearer ${session}` },
    ...(authParams ? { authParams } : {}),
    logLevel: capture.logLevel,
    logHandler: capture.logHandler,
    ...options,
  });
  client.e2e = { label, log: capture.log, sub, session };
  stack.clients.add(client);
  return client;
}

/** A REST client with the API key, as a backend publishes. */
export function restWithKey(stack, { protocol = "msgpack", options = {} } = {}) {
  const label = `rest-key/${protocol}`;
  const capture = logCapture(label);
  const client = new Ably.Rest({
    ...brokerOptions(stack, protocol),
    key: stack.apiKey,
    logLevel: capture.logLevel,
    logHandler: capture.logHandler,
    ...options,
  });
  client.e2e = { label, log: capture.log };
  return client;
}

/** A REST client authenticated as `sub` through the sidecar's authUrl. */
export async function restAsUser(stack, { sub, roles = [], mode = "token", protocol = "msgpack", options = {} }) {
  const session = await mintSession(stack, sub, roles);
  const label = `rest-${sub}/${mode}/${protocol}`;
  const capture = logCapture(label);
  const client = new Ably.Rest({
    ...brokerOptions(stack, protocol),
    authUrl: authUrlFor(stack, mode),
    authHeaders: { Authorization: `Bearer ${session}` },
    logLevel: capture.logLevel,
    logHandler: capture.logHandler,
    ...options,
  });
  client.e2e = { label, log: capture.log, sub, session };
  return client;
}

/** Close a Realtime client and wait (bounded) until it is closed. */
export async function closeClient(client) {
  const state = client.connection?.state;
  if (!state || ["closed", "failed", "initialized"].includes(state)) {
    if (state === "initialized") client.close();
    return;
  }
  const closed = new Promise((resolve) => {
    client.connection.once("closed", resolve);
    client.connection.once("failed", resolve);
  });
  client.close();
  await within(closed, `${client.e2e?.label ?? "client"} to close`, { ms: CLOSE_MS, clients: [client] });
}

// ---------------------------------------------------------------------------------------------
// States

/** Wait until the connection is `state`; fail early when it lands in `failed` instead. */
export async function connectionState(client, state, ms = WAIT_MS) {
  const connection = client.connection;
  if (connection.state === state) return null;
  const reached = new Promise((resolve, reject) => {
    const listener = (change) => {
      if (change.current === state) {
        connection.off(listener);
        resolve(change);
      } else if (change.current === "failed" && state !== "failed") {
        connection.off(listener);
        reject(
          new Error(
            `${client.e2e?.label} connection went failed while waiting for ${state}: ` +
              `${describeError(change.reason)}\n${diagnostics([client])}`,
          ),
        );
      }
    };
    connection.on(listener);
  });
  return within(reached, `${client.e2e?.label} connection to be ${state} (it is ${connection.state})`, {
    ms,
    clients: [client],
  });
}

export const connected = (client, ms) => connectionState(client, "connected", ms);

/** Wait until the channel is `state`. */
export async function channelState(channel, state, { ms = WAIT_MS, clients = [] } = {}) {
  if (channel.state === state) return null;
  const reached = new Promise((resolve) => {
    const listener = (change) => {
      if (change.current === state) {
        channel.off(listener);
        resolve(change);
      }
    };
    channel.on(listener);
  });
  return within(reached, `channel ${channel.name} to be ${state} (it is ${channel.state})`, { ms, clients });
}

export function describeError(err) {
  if (!err) return "(no error)";
  return `${err.code ?? "?"}/${err.statusCode ?? "?"} ${err.message ?? String(err)}`;
}

// ---------------------------------------------------------------------------------------------
// Inboxes: everything a subscription observed, with bounded waits on it

class Inbox {
  constructor(what, clients) {
    this.what = what;
    this.clients = clients;
    this.items = [];
    this.waiters = new Set();
  }
  push(item) {
    this.items.push(item);
    for (const waiter of this.waiters) waiter();
  }
  /** Wait for the first observed item matching `predicate` (also those already observed). */
  async waitFor(predicate, what, ms = WAIT_MS) {
    return this.waitForAll([predicate], what, ms).then((found) => found[0]);
  }
  /** Wait until each predicate matches a distinct observed item; resolves with those items. */
  async waitForAll(predicates, what, ms = WAIT_MS) {
    const check = () => {
      const used = new Set();
      const found = [];
      for (const predicate of predicates) {
        const index = this.items.findIndex((item, i) => !used.has(i) && predicate(item));
        if (index < 0) return null;
        used.add(index);
        found.push(this.items[index]);
      }
      return found;
    };
    const now = check();
    if (now) return now;
    let waiter;
    const done = new Promise((resolve) => {
      waiter = () => {
        const found = check();
        if (found) resolve(found);
      };
      this.waiters.add(waiter);
    });
    try {
      return await within(
        done,
        `${what} on ${this.what}; observed so far: ${JSON.stringify(this.items.map(summarise))}`,
        { ms, clients: this.clients },
      );
    } finally {
      this.waiters.delete(waiter);
    }
  }
}

function summarise(item) {
  const out = {};
  for (const key of ["action", "name", "clientId", "connectionId", "data", "encoding"]) {
    if (item[key] !== undefined) out[key] = Buffer.isBuffer(item[key]) ? `<${item[key].length} bytes>` : item[key];
  }
  return out;
}

/** Subscribe to messages on `channel` (this attaches it) and record what arrives. */
export async function messageInbox(client, channel) {
  const inbox = new Inbox(`messages of ${channel.name} seen by ${client.e2e?.label}`, [client]);
  await within(channel.subscribe((message) => inbox.push(message)), `${client.e2e?.label} to subscribe to ${channel.name}`, {
    clients: [client],
  });
  return inbox;
}

/** Subscribe to presence events on `channel` (this attaches it) and record what arrives. */
export async function presenceInbox(client, channel) {
  const inbox = new Inbox(`presence of ${channel.name} seen by ${client.e2e?.label}`, [client]);
  await within(
    channel.presence.subscribe((event) => inbox.push(event)),
    `${client.e2e?.label} to subscribe to presence of ${channel.name}`,
    { clients: [client] },
  );
  return inbox;
}

/** A channel name no other test uses, under `prefix` (e.g. "orders:alice"). */
export function uniqueChannel(prefix) {
  return `${prefix}:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
}

/** Sorted summary of presence members: [{clientId, data}] by clientId. */
export function memberSummary(members) {
  return members
    .map((m) => ({ clientId: m.clientId, data: m.data }))
    .sort((a, b) => a.clientId.localeCompare(b.clientId));
}

// ---------------------------------------------------------------------------------------------
// A counting authUrl

/**
 * An HTTP proxy on loopback in front of the sidecar's token routes that records every request the
 * client makes to its authUrl (method, path and query), then forwards it unchanged (or, after
 * `failNext(n)`, answers the next n with 503). It lets a test prove that the client went back to
 * its authUrl, and make a renewal fail.
 */
export async function authProxy(stack) {
  const hits = [];
  let failing = 0;
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const url = new URL(req.url, stack.sidecar);
    hits.push({ method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), at: Date.now() });
    if (failing > 0) {
      failing -= 1;
      res.writeHead(503, { "content-type": "text/plain" });
      res.end("the auth proxy was told to fail this request");
      return;
    }
    const headers = {};
    for (const name of ["authorization", "accept", "content-type", "cookie"]) {
      if (req.headers[name]) headers[name] = req.headers[name];
    }
    try {
      const upstream = await fetch(url, {
        method: req.method,
        headers,
        body: chunks.length && req.method !== "GET" ? Buffer.concat(chunks) : undefined,
        signal: AbortSignal.timeout(WAIT_MS),
      });
      const body = Buffer.from(await upstream.arrayBuffer());
      const out = { "content-type": upstream.headers.get("content-type") ?? "application/octet-stream" };
      for (const name of ["x-ably-errorcode", "x-ably-errormessage"]) {
        const value = upstream.headers.get(name);
        if (value) out[name] = value;
      }
      res.writeHead(upstream.status, out);
      res.end(body);
    } catch (error) {
      res.writeHead(502, { "content-type": "text/plain" });
      res.end(`proxy error: ${error.message}`);
    }
  });
  server.listen(0, "127.0.0.1");
  await within(once(server, "listening"), "the auth proxy to listen");
  const { port } = server.address();
  return {
    hits,
    /** Answer the next `n` requests with 503 instead of forwarding them. */
    failNext: (n = 1) => {
      failing = n;
    },
    url: (mode = "token") => `http://127.0.0.1:${port}${new URL(authUrlFor(stack, mode)).pathname}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}
