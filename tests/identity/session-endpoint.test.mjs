// Auth.js with database sessions: a real @auth/core `Auth()` handler (tests/support/authjs-session/
// server.mjs, sessions in memory through a minimal adapter) issues an opaque session token, and
// the real `ably-tokend serve`, configured with the README's `authjs-database` block (only its
// URL pointed at the handler's port), asks that handler who the caller is.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  ROOT,
  capabilityOf,
  readmeConfig,
  requestToken,
  startServe,
  stopServeCheckingLog,
} from "./helpers.mjs";

/** Starts server.mjs; resolves with {proc, port, cookie: {name, value}} from its first line. */
function startAuthServer() {
  const proc = spawn(process.execPath, ["server.mjs"], {
    cwd: path.join(ROOT, "tests/support/authjs-session"),
    stdio: ["pipe", "pipe", "inherit"],
  });
  return new Promise((resolve, reject) => {
    let buffer = "";
    proc.stdout.setEncoding("utf8").on("data", (chunk) => {
      buffer += chunk;
      const nl = buffer.indexOf("\n");
      if (nl >= 0) resolve({ proc, ...JSON.parse(buffer.slice(0, nl)) });
    });
    proc.on("exit", (code) => reject(new Error(`server.mjs exited (${code}) before listening`)));
  });
}

describe("Auth.js database sessions (the README's session_endpoint configuration)", () => {
  let auth;
  let stack;
  before(async () => {
    auth = await startAuthServer();
    const issuers = readmeConfig("authjs-database").replace(
      "http://127.0.0.1:3000/",
      `http://127.0.0.1:${auth.port}/`,
    );
    assert.notEqual(issuers, readmeConfig("authjs-database"), "the block's url was rewritten");
    stack = await startServe({ issuers });
  });
  after(async () => {
    await stopServeCheckingLog(stack);
    auth?.proc.stdin.end();
  });

  test("the session cookie Auth() issued gives the user's id and role", async () => {
    const res = await requestToken(stack, { [auth.cookie.name]: auth.cookie.value, theme: "dark" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    // server.mjs's session callback sets session.user.id and session.user.role ("support").
    assert.equal(res.body.clientId, "user-1");
    assert.deepEqual(capabilityOf(res.body), {
      "chat:user-1": ["publish", "subscribe"],
      "support:*": ["presence", "subscribe"],
    });
  });

  test("a token Auth() does not know is refused: its answer is null", async () => {
    const res = await requestToken(stack, { [auth.cookie.name]: "f".repeat(64) });
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_invalid");
    assert.equal(res.body.error.code, 40100);
  });

  test("an unlisted cookie is not a credential", async () => {
    const res = await requestToken(stack, { "next-auth.session-token": auth.cookie.value });
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_token_missing");
  });

  test("the handler gone: 503 session_upstream_unavailable, never a 500", async () => {
    auth.proc.stdin.end();
    await new Promise((resolve) => auth.proc.once("exit", resolve));
    // Another token than before, so no cached answer serves it.
    const res = await requestToken(stack, { [auth.cookie.name]: "e".repeat(64) });
    assert.equal(res.status, 503, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_upstream_unavailable");
    assert.equal(res.body.error.code, 50300);
  });
});
