// Scaffolding for the identity-provider suite: the real `ably-tokend serve` started with a config
// file on a free port, the configurations the README documents (read from README.md itself, so
// the copy-paste text is the tested text), requests to /api/ably-token, and the log check.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { BINARY, EXIT_MS, READY_TIMEOUT_MS, ROOT, Tail, within } from "../support/node/stack.mjs";

export { ROOT };

/** The Ably key the sidecar signs with (its secret is checked for in the log too). */
export const API_KEY = "identityApp.testKey:identity-key-secret-never-logged";
export const POLICY = path.join(ROOT, "tests/identity/fixtures/policy.toml");

/**
 * The TOML block that follows `<!-- identity-config: NAME -->` in README.md: the configuration
 * the README tells people to paste.
 */
export function readmeConfig(name) {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const marker = `<!-- identity-config: ${name} -->`;
  const at = readme.indexOf(marker);
  if (at < 0) throw new Error(`README.md has no ${marker}`);
  const block = /```toml\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error(`no toml block after ${marker} in README.md`);
  return block[1];
}

/**
 * Start `ably-tokend serve --config <file>` where the file is `issuers` (TOML text with
 * [[issuers]] tables) plus a server on port 0, the test key and the test policy; `env` adds
 * environment variables (the secrets). Resolves once the binary logs that it listens.
 */
export async function startServe({ issuers, env = {} }) {
  const dir = mkdtempSync(path.join(tmpdir(), "tokend-identity-"));
  const config = path.join(dir, "ably-tokend.toml");
  writeFileSync(
    config,
    `${issuers}\n[server]\nbind = "127.0.0.1:0"\nrate_limit_per_second = 0\n\n` +
      `[ably]\napi_key = "${API_KEY}"\n\n[policy]\npath = ${JSON.stringify(POLICY)}\nwatch = false\n\n` +
      `[log]\nformat = "json"\nlevel = "info"\n`,
  );
  const proc = spawn(BINARY, ["serve", "--config", config], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: process.env.PATH, NO_COLOR: "1", ...env },
  });
  const stack = {
    proc,
    dir,
    log: "",
    tail: new Tail(200),
    secrets: new Set([API_KEY.split(":")[1], ...Object.values(env)]),
    exited: null,
  };
  stack.exitPromise = new Promise((resolve) =>
    proc.on("exit", (code, signal) => resolve((stack.exited = { code, signal }))),
  );
  const port = new Promise((resolve, reject) => {
    let buffer = "";
    const take = (chunk) => {
      stack.log += chunk;
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        stack.tail.push(line);
        try {
          const entry = JSON.parse(line);
          if (entry.message === "listening" && entry.target === "ably_tokend::cli::serve") resolve(entry.port);
        } catch {
          // not a JSON log line
        }
      }
    };
    proc.stdout.setEncoding("utf8").on("data", take);
    proc.stderr.setEncoding("utf8").on("data", take);
    proc.on("error", (e) => reject(new Error(`cannot start ${BINARY}: ${e.message}`)));
    proc.on("exit", (code) =>
      reject(new Error(`ably-tokend serve exited (${code}) before listening:\n${stack.tail.text()}`)),
    );
  });
  try {
    stack.port = await within(port, "ably-tokend serve to listen", {
      ms: READY_TIMEOUT_MS,
      explain: () => stack.tail.text(40),
    });
  } catch (error) {
    await stopServe(stack);
    throw error;
  }
  stack.url = `http://127.0.0.1:${stack.port}`;
  return stack;
}

/** SIGTERM (SIGKILL after EXIT_MS), then remove the config directory. */
export async function stopServe(stack) {
  if (!stack.exited) {
    stack.proc.kill("SIGTERM");
    const timer = setTimeout(() => stack.proc.kill("SIGKILL"), EXIT_MS);
    await stack.exitPromise;
    clearTimeout(timer);
  }
  rmSync(stack.dir, { recursive: true, force: true });
}

/** The log must hold none of the stack's secrets: env secrets, the key secret, every cookie sent. */
export function assertNoSecretsLogged(stack) {
  if (!/ably_tokend::request/.test(stack.log)) {
    throw new Error("no request log lines were captured: the secret check would prove nothing");
  }
  const leaked = [...stack.secrets].filter((s) => s && s.length >= 8 && stack.log.includes(s));
  if (leaked.length) {
    throw new Error(`ably-tokend logged ${leaked.length} secret(s) or cookie(s), e.g. one starting ${leaked[0].slice(0, 6)}…`);
  }
}

/** After a group: stops the stack if it started, then asserts its log holds none of its secrets. */
export async function stopServeCheckingLog(stack) {
  if (!stack) return;
  await stopServe(stack);
  assertNoSecretsLogged(stack);
}

/**
 * GET /api/ably-token with `cookies` ({name: value}) and optional `headers`; every cookie value
 * (and each of its JWE parts) becomes a secret the log must not hold. Returns {status, body}.
 */
export async function requestToken(stack, cookies, headers = {}) {
  for (const value of Object.values(cookies)) {
    stack.secrets.add(value);
    for (const part of value.split(".")) if (part.length >= 16) stack.secrets.add(part);
  }
  const cookie = Object.entries(cookies)
    .map(([name, value]) => `${name}=${value}`)
    .join("; ");
  const res = await fetch(`${stack.url}/api/ably-token`, {
    headers: { ...(cookie ? { cookie } : {}), ...headers },
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** The capability of a TokenRequest, parsed. */
export const capabilityOf = (tokenRequest) => JSON.parse(tokenRequest.capability);

/** A capability with each resource's operations sorted, to compare with deepEqual. */
export const sortedCapability = (cap) =>
  Object.fromEntries(Object.entries(cap).map(([k, ops]) => [k, [...ops].sort()]).sort());

/** What fixtures/policy.toml grants the role `editor` (sorted as sortedCapability sorts). */
export const editorCapability = (sub) =>
  sortedCapability({
    [`chat:${sub}`]: ["publish", "subscribe"],
    "docs:*": ["presence", "publish", "subscribe"],
  });
