// Auth.js v5 and NextAuth v4 session cookies, minted by the real libraries (@auth/core's and
// next-auth's `encode`, chunked by @auth/core's own SessionStore), sent to the real
// `ably-tokend serve` configured with the README's copy-paste configurations.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, describe, test } from "node:test";

import { encode as encodeV5 } from "@auth/core/jwt";
import { CompactEncrypt } from "jose";
import { encode as encodeV4 } from "next-auth/jwt";

import { BINARY } from "../support/node/stack.mjs";
import { SessionStore } from "./node_modules/@auth/core/lib/utils/cookie.js";
import {
  capabilityOf,
  editorCapability,
  readmeConfig,
  requestToken,
  sortedCapability,
  startServe,
  stopServeCheckingLog,
} from "./helpers.mjs";

const AUTH_SECRET = "identity-suite-auth-secret-0123456789abcdef";
const OLD_SECRET = "identity-suite-previous-secret-0123456789ab";
const OTHER_SECRET = "some-other-apps-secret-0123456789abcdefghij";
const NEXTAUTH_SECRET = "identity-suite-nextauth-secret-0123456789ab";

const V5 = "authjs.session-token";
const V5_SECURE = "__Secure-authjs.session-token";
const V4 = "next-auth.session-token";

/** An Auth.js v5 session cookie value, as `auth()` would write it under `salt`. */
const v5Cookie = (token, { salt = V5, secret = AUTH_SECRET, maxAge } = {}) =>
  encodeV5({ token, secret, salt, ...(maxAge === undefined ? {} : { maxAge }) });

/** Splits `value` into cookies the way @auth/core does past ~4 KB: {NAME.0: …, NAME.1: …}. */
function chunked(name, value) {
  const logger = { debug() {}, error() {}, warn() {} };
  const store = new SessionStore({ name, options: {} }, {}, logger);
  return Object.fromEntries(store.chunk(value, {}).map((c) => [c.name, c.value]));
}

/** Flips one base64url character of part `index` of a compact JWE. */
function tamper(jwe, index) {
  const parts = jwe.split(".");
  const p = parts[index];
  const at = Math.floor(p.length / 2);
  parts[index] = p.slice(0, at) + (p[at] === "A" ? "B" : "A") + p.slice(at + 1);
  return parts.join(".");
}

function assertRefused(res, reason) {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.error.reason, reason, JSON.stringify(res.body));
  assert.equal(res.body.error.code, 40100);
}

describe("Auth.js v5 (the README's configuration)", () => {
  let stack;
  before(async () => {
    stack = await startServe({ issuers: readmeConfig("authjs-v5"), env: { AUTH_SECRET } });
  });
  after(async () => {
    await stopServeCheckingLog(stack);
  });

  test("a session cookie from @auth/core gives the user's clientId and the role's capability", async () => {
    const value = await v5Cookie({ sub: "alice", name: "Alice", email: "a@example.com", role: "editor" });
    const res = await requestToken(stack, { [V5]: value });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, "alice");
    assert.deepEqual(sortedCapability(capabilityOf(res.body)), editorCapability("alice"));
    assert.equal(res.body.keyName, "identityApp.testKey");
  });

  test("the __Secure- cookie (https apps) works, and without a role only the default applies", async () => {
    const value = await v5Cookie({ sub: "bob" }, { salt: V5_SECURE });
    const res = await requestToken(stack, { [V5_SECURE]: value });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, "bob");
    assert.deepEqual(capabilityOf(res.body), { "chat:bob": ["publish", "subscribe"] });
  });

  test("a long session is split by @auth/core's SessionStore and joined again", async () => {
    const value = await v5Cookie({ sub: "carol", role: "editor", groups: "g".repeat(9000) });
    const cookies = chunked(V5, value);
    assert.ok(Object.keys(cookies).length >= 3, Object.keys(cookies).join(","));
    assert.ok(!(V5 in cookies));
    const res = await requestToken(stack, cookies);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, "carol");
    assert.deepEqual(sortedCapability(capabilityOf(res.body)), editorCapability("carol"));
  });

  test("a chunk set with a gap is malformed; more than 8 chunks or 32 KiB is too large", async () => {
    const cookies = chunked(V5, await v5Cookie({ sub: "carol", groups: "g".repeat(9000) }));
    delete cookies[`${V5}.1`];
    assertRefused(await requestToken(stack, cookies), "session_token_malformed");
    const nine = Object.fromEntries([...Array(9).keys()].map((i) => [`${V5}.${i}`, "x".repeat(16)]));
    assertRefused(await requestToken(stack, nine), "session_token_too_large");
    const big = Object.fromEntries([...Array(8).keys()].map((i) => [`${V5}.${i}`, "y".repeat(4200)]));
    assertRefused(await requestToken(stack, big), "session_token_too_large");
  });

  test("a cookie encrypted with the other cookie name as salt is refused", async () => {
    const value = await v5Cookie({ sub: "mallory" }, { salt: V5_SECURE });
    assertRefused(await requestToken(stack, { [V5]: value }), "signature_invalid");
  });

  test("a cookie encrypted with another secret is refused", async () => {
    const value = await v5Cookie({ sub: "mallory", role: "editor" }, { secret: OTHER_SECRET });
    assertRefused(await requestToken(stack, { [V5]: value }), "signature_invalid");
  });

  test("a tampered tag, ciphertext or header is refused, never a 500", async () => {
    const value = await v5Cookie({ sub: "alice", role: "member" });
    for (const part of [4, 3, 2]) {
      assertRefused(await requestToken(stack, { [V5]: tamper(value, part) }), "signature_invalid");
    }
    // The header re-encoded with one more field: the tag covers it (and typ is allowed).
    const [h, ...rest] = value.split(".");
    const header = JSON.parse(Buffer.from(h, "base64url"));
    const reencoded = Buffer.from(JSON.stringify({ ...header, typ: "JWT" })).toString("base64url");
    assertRefused(await requestToken(stack, { [V5]: [reencoded, ...rest].join(".") }), "signature_invalid");
  });

  test("another alg or enc, or a zip header, is refused before any key is tried", async () => {
    const payload = new TextEncoder().encode(JSON.stringify({ sub: "mallory", exp: 9999999999 }));
    const key = new Uint8Array(32).fill(1);
    const a128 = await new CompactEncrypt(payload).setProtectedHeader({ alg: "dir", enc: "A128CBC-HS256" }).encrypt(key);
    assertRefused(await requestToken(stack, { [V5]: a128 }), "algorithm_not_allowed");
    const kw = await new CompactEncrypt(payload).setProtectedHeader({ alg: "A256KW", enc: "A256GCM" }).encrypt(key);
    assertRefused(await requestToken(stack, { [V5]: kw }), "algorithm_not_allowed");
    // zip and crit are refused from the header alone, whatever follows it.
    const b64 = (bytes) => Buffer.from(bytes).toString("base64url");
    for (const extra of [{ zip: "DEF" }, { crit: ["exp"], exp: 1 }]) {
      const header = b64(JSON.stringify({ alg: "dir", enc: "A256CBC-HS512", ...extra }));
      const jwe = `${header}..${b64(new Uint8Array(16))}.${b64(new Uint8Array(32))}.${b64(new Uint8Array(32))}`;
      assertRefused(await requestToken(stack, { [V5]: jwe }), "session_token_unsupported");
    }
  });

  test("an expired session is refused", async () => {
    const value = await v5Cookie({ sub: "alice" }, { maxAge: -60 });
    assertRefused(await requestToken(stack, { [V5]: value }), "session_token_expired");
  });

  test("the Authorization header wins: a bad Bearer token is not rescued by a good cookie", async () => {
    const value = await v5Cookie({ sub: "alice", role: "editor" });
    const res = await requestToken(stack, { [V5]: value }, { authorization: "Bearer not-a-jwt" });
    assertRefused(res, "session_token_malformed");
    // Another scheme is not ours: the cookie decides.
    const basic = await requestToken(stack, { [V5]: value }, { authorization: "Basic dXNlcjpwYXNz" });
    assert.equal(basic.status, 200, JSON.stringify(basic.body));
  });

  test("no cookie at all is session_token_missing", async () => {
    assertRefused(await requestToken(stack, { unrelated: "1" }), "session_token_missing");
  });
});

describe("Auth.js secret rotation", () => {
  let stack;
  before(async () => {
    // The README's configuration with the previous secret listed second.
    const issuers = readmeConfig("authjs-v5").replace(
      'secret_env = ["AUTH_SECRET"]',
      'secret_env = ["AUTH_SECRET", "AUTH_SECRET_1"]',
    );
    assert.match(issuers, /AUTH_SECRET_1/);
    stack = await startServe({ issuers, env: { AUTH_SECRET, AUTH_SECRET_1: OLD_SECRET } });
  });
  after(async () => {
    await stopServeCheckingLog(stack);
  });

  test("cookies from the new and the previous secret both work; another secret does not", async () => {
    for (const secret of [AUTH_SECRET, OLD_SECRET]) {
      const res = await requestToken(stack, { [V5]: await v5Cookie({ sub: "dana" }, { secret }) });
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.clientId, "dana");
    }
    const other = await v5Cookie({ sub: "dana" }, { secret: OTHER_SECRET });
    assertRefused(await requestToken(stack, { [V5]: other }), "signature_invalid");
  });
});

describe("NextAuth v4 (the README's configuration)", () => {
  let stack;
  before(async () => {
    stack = await startServe({ issuers: readmeConfig("nextauth-v4"), env: { NEXTAUTH_SECRET } });
  });
  after(async () => {
    await stopServeCheckingLog(stack);
  });

  test("a session cookie from next-auth/jwt gives the user's clientId and the role's capability", async () => {
    const value = await encodeV4({ token: { sub: "erin", name: "Erin", role: "editor" }, secret: NEXTAUTH_SECRET });
    assert.equal(JSON.parse(Buffer.from(value.split(".")[0], "base64url")).enc, "A256GCM");
    const res = await requestToken(stack, { [V4]: value });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, "erin");
    assert.deepEqual(sortedCapability(capabilityOf(res.body)), editorCapability("erin"));
  });

  test("the __Secure- cookie works too", async () => {
    const value = await encodeV4({ token: { sub: "erin" }, secret: NEXTAUTH_SECRET });
    const res = await requestToken(stack, { [`__Secure-${V4}`]: value });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(capabilityOf(res.body), { "chat:erin": ["publish", "subscribe"] });
  });

  test("wrong secret, tampering and expiry are refused", async () => {
    const wrong = await encodeV4({ token: { sub: "erin" }, secret: OTHER_SECRET });
    assertRefused(await requestToken(stack, { [V4]: wrong }), "signature_invalid");
    const good = await encodeV4({ token: { sub: "erin" }, secret: NEXTAUTH_SECRET });
    for (const part of [4, 3, 2]) {
      assertRefused(await requestToken(stack, { [V4]: tamper(good, part) }), "signature_invalid");
    }
    const expired = await encodeV4({ token: { sub: "erin" }, secret: NEXTAUTH_SECRET, maxAge: -60 });
    assertRefused(await requestToken(stack, { [V4]: expired }), "session_token_expired");
  });
});

describe("ably-tokend token inspect", () => {
  const inspect = (value, args, env = {}) => {
    const run = spawnSync(BINARY, ["token", "inspect", value, ...args], {
      env: { PATH: process.env.PATH, NO_COLOR: "1", ...env },
      encoding: "utf8",
      timeout: 20_000,
    });
    const output = run.stdout + run.stderr;
    for (const secret of Object.values(env)) assert.ok(!output.includes(secret), "the secret was printed");
    return { status: run.status, output };
  };

  test("decrypts an Auth.js v5 cookie with --secret-env and shows its header and claims", async () => {
    const value = await v5Cookie({ sub: "alice", role: "editor" }, { salt: V5_SECURE });
    const ok = inspect(value, ["--secret-env", "OLD", "--secret-env", "AUTH_SECRET", "--cookie-name", V5_SECURE], {
      AUTH_SECRET,
      OLD: OLD_SECRET,
    });
    assert.equal(ok.status, 0, ok.output);
    assert.match(ok.output, /kind: +encrypted session cookie \(Auth\.js v5\)/);
    assert.match(ok.output, /"enc":"A256CBC-HS512"/);
    assert.match(ok.output, /sub: +"alice"/);
    assert.match(ok.output, /"role": "editor"/);
    assert.match(ok.output, /verified: +yes, decrypted with the secret in AUTH_SECRET/);
    // The default cookie name is the http one: the key differs, so it does not open.
    const wrongName = inspect(value, ["--secret-env", "AUTH_SECRET"], { AUTH_SECRET });
    assert.equal(wrongName.status, 1, wrongName.output);
    assert.match(wrongName.output, /verified: +NO: no secret in AUTH_SECRET opens it/);
    assert.doesNotMatch(wrongName.output, /alice/);
  });

  test("decrypts a NextAuth v4 cookie; without --secret-env shows the header only", async () => {
    const value = await encodeV4({ token: { sub: "erin" }, secret: NEXTAUTH_SECRET });
    const ok = inspect(value, ["--secret-env", "NEXTAUTH_SECRET"], { NEXTAUTH_SECRET });
    assert.equal(ok.status, 0, ok.output);
    assert.match(ok.output, /NextAuth v4/);
    assert.match(ok.output, /sub: +"erin"/);
    const bare = inspect(value, []);
    assert.equal(bare.status, 0, bare.output);
    assert.match(bare.output, /"enc":"A256GCM"/);
    assert.doesNotMatch(bare.output, /erin/);
    const unset = inspect(value, ["--secret-env", "NOT_SET_ANYWHERE"]);
    assert.notEqual(unset.status, 0);
    assert.match(unset.output, /environment variable NOT_SET_ANYWHERE is not set/);
  });
});
