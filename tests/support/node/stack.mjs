// What the Node suites (tests/e2e and tests/browser) share: bounded waiting, a bounded tail of
// lines, and the real `ably-tokend dev` binary (sidecar, embedded broker and development issuer)
// started on free ports and stopped with its log checked for secrets.
//
// This file sits outside both suites' directories, so a bare import here (e.g. "ably") would be
// resolved from tests/support/node, where there is no node_modules: it imports node: builtins
// only, and anything else comes in as a parameter.

import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");

/** The binary under test: `ABLY_TOKEND_BIN` (set by tests/e2e.rs and tests/browser.rs), else the debug build. */
export const BINARY = process.env.ABLY_TOKEND_BIN
  ? path.resolve(process.env.ABLY_TOKEND_BIN)
  : path.join(ROOT, "target/debug/ably-tokend");

export const READY_TIMEOUT_MS = 20_000;
export const EXIT_MS = 10_000;

const running = new Set(); // stacks started and not yet stopped, killed on exit whatever happens

process.on("exit", () => {
  for (const stack of running) {
    try {
      stack.proc.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
});

/** The stacks started and not yet stopped, for diagnostics. */
export const runningStacks = () => [...running];

// ---------------------------------------------------------------------------------------------
// Bounded waiting

/** The last `limit` lines pushed. */
export class Tail {
  constructor(limit) {
    this.limit = limit;
    this.lines = [];
  }
  push(line) {
    this.lines.push(line);
    if (this.lines.length > this.limit) this.lines.splice(0, this.lines.length - this.limit);
  }
  text(last = this.limit) {
    return this.lines.slice(-last).join("\n");
  }
}

/**
 * Resolve with `promise`, or reject after `ms` naming `what` and appending what `explain()`
 * returns (a string, or a promise of one): the diagnostics of whoever waits.
 */
export async function within(promise, what, { ms, explain } = {}) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(async () => {
      const more = explain
        ? await Promise.resolve()
            .then(explain)
            .catch((e) => `(no diagnostics: ${e.message})`)
        : "";
      reject(new Error(`timed out after ${ms} ms waiting for ${what}\n${more}`));
    }, ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// The dev stack

/** Split `stream`'s text into lines, calling `onLine` with each; `onChunk` sees the raw text. */
function lines(stream, onLine, onChunk = () => {}) {
  let buffer = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk) => {
    onChunk(chunk);
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      onLine(line);
    }
  });
}

/**
 * Start `ably-tokend dev --port 0 --broker-port 0 --json ...args` and wait (bounded) for its one
 * JSON ready line: {sidecar, broker: {host, port}, apiKey, sessionUrl}, whose fields are copied
 * onto the returned stack. The stack also has `proc`, `argv`, `stderr` and `stdout` (tails),
 * `log` (everything the binary logged, bounded), `secrets` (what must never appear in it: the API
 * key's secret from the start; add each session token minted), `exited` and `exitPromise`.
 * `verbose` copies the binary's stderr to this process's stderr.
 */
export async function startStack({ args = [], verbose = false } = {}) {
  const argv = ["dev", "--port", "0", "--broker-port", "0", "--json", ...args];
  const proc = spawn(BINARY, argv, {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  const stack = {
    proc,
    argv,
    stderr: new Tail(400),
    stdout: new Tail(100),
    log: { text: "", limit: 8 * 1024 * 1024 },
    secrets: new Set(),
    exited: null,
  };
  running.add(stack);
  stack.exitPromise = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      stack.exited = { code, signal };
      resolve(stack.exited);
    });
  });

  lines(
    proc.stderr,
    (line) => {
      stack.stderr.push(line);
      if (verbose) process.stderr.write(`[ably-tokend] ${line}\n`);
    },
    (chunk) => {
      if (stack.log.text.length < stack.log.limit) stack.log.text += chunk;
    },
  );

  const ready = new Promise((resolve, reject) => {
    lines(proc.stdout, (raw) => {
      const line = raw.trim();
      stack.stdout.push(line);
      if (!line.startsWith("{")) return;
      try {
        resolve(JSON.parse(line));
      } catch (error) {
        reject(new Error(`the ready line is not JSON (${error.message}): ${line}`));
      }
    });
    proc.on("error", (error) => reject(new Error(`cannot start ${BINARY}: ${error.message}`)));
    proc.on("exit", (code, signal) =>
      reject(
        new Error(
          `ably-tokend ${argv.join(" ")} exited (code ${code}, signal ${signal}) before printing its ready line\n` +
            `stdout:\n${stack.stdout.text()}\nstderr:\n${stack.stderr.text()}`,
        ),
      ),
    );
  });

  const fail = async (error) => {
    await stopProcess(stack).catch(() => {});
    throw error;
  };
  let info;
  try {
    info = await within(ready, `the JSON ready line of ${BINARY} ${argv.join(" ")}`, {
      ms: READY_TIMEOUT_MS,
      explain: () => stack.stderr.text(40),
    });
  } catch (error) {
    return fail(error);
  }
  for (const field of ["sidecar", "broker", "apiKey", "sessionUrl"]) {
    if (!info[field]) return fail(new Error(`the ready line lacks "${field}": ${JSON.stringify(info)}`));
  }
  if (typeof info.broker.port !== "number" || !info.broker.host) {
    return fail(new Error(`the ready line's broker is not {host, port}: ${JSON.stringify(info.broker)}`));
  }
  stack.secrets.add(info.apiKey.slice(info.apiKey.indexOf(":") + 1));
  return Object.assign(stack, info);
}

/** SIGTERM the binary (SIGKILL after EXIT_MS) and await its exit; returns {code, signal}. */
export async function stopProcess(stack) {
  running.delete(stack);
  if (stack.exited) return stack.exited;
  stack.proc.kill("SIGTERM");
  const timer = setTimeout(() => stack.proc.kill("SIGKILL"), EXIT_MS);
  try {
    return await stack.exitPromise;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The binary's whole log for this stack must hold nothing in `stack.secrets`: neither the API
 * key's secret nor any session token minted for it (nor such a token's signature).
 */
export function assertNoSecretsLogged(stack) {
  if (stack.secrets.size > 1 && !/ably_tokend::request/.test(stack.log.text)) {
    throw new Error("no request log lines were captured from ably-tokend: the secret check would prove nothing");
  }
  const leaked = [...stack.secrets].filter((secret) => secret && stack.log.text.includes(secret));
  if (leaked.length) {
    throw new Error(
      `ably-tokend logged ${leaked.length} secret(s) or token(s), e.g. one starting ${leaked[0].slice(0, 8)}…`,
    );
  }
}

/**
 * A session JWT for `sub` from the development issuer (`params`: roles, ttl; empty ones left
 * out), added to the stack's secrets. `wait` is `within`'s options.
 */
export async function mintSession(stack, sub, params, wait) {
  const url = new URL(stack.sessionUrl);
  url.searchParams.set("sub", sub);
  for (const [name, value] of Object.entries(params)) {
    if (value) url.searchParams.set(name, value);
  }
  const res = await within(fetch(url, { signal: AbortSignal.timeout(wait.ms) }), `GET ${url}`, wait);
  const body = (await res.text()).trim();
  if (res.status !== 200) throw new Error(`GET ${url} answered ${res.status}: ${body}`);
  stack.secrets.add(body);
  stack.secrets.add(body.split(".")[2]);
  return body;
}
