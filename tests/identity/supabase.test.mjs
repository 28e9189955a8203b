// Supabase session cookies written by the real @supabase/ssr: `createServerClient` with a cookies
// adapter, `auth.setSession` (which asks Supabase Auth's GET /auth/v1/user, served here on
// loopback), and whatever the library hands to `setAll` — `base64-` + base64url of the session,
// chunked past ~3 KB by the library itself. The access token inside is an ES256 JWT signed by a key
// this file serves as the project's JWKS. Sent to the real `ably-tokend serve`, configured with the
// README's "Supabase (cookie)" block, its URLs pointed at the loopback server.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, describe, test } from "node:test";

import { createChunks, createServerClient, stringToBase64URL } from "@supabase/ssr";
import { SignJWT, exportJWK, generateKeyPair } from "jose";

import {
  capabilityOf,
  editorCapability,
  readmeConfig,
  requestToken,
  sortedCapability,
  startServe,
  stopServeCheckingLog,
} from "./helpers.mjs";

const ANON_KEY = "anon-key-for-the-identity-suite";
const USER_ID = "8d0fd2b3-9ca7-4d9e-a95f-9e13dded323e";
const KID = "supabase-identity-suite-key";

function assertRefused(res, reason) {
  assert.equal(res.status, 401, JSON.stringify(res.body));
  assert.equal(res.body.error.reason, reason, JSON.stringify(res.body));
  assert.equal(res.body.error.code, 40100);
}

/**
 * Supabase Auth as far as @supabase/ssr and the sidecar use it: the project's JWKS, and GET /user
 * answering with the user of the bearer token (what `setSession` fetches). `userMetadata` is what
 * the next /user call returns as the user's metadata (a large one makes the library chunk).
 */
async function startSupabaseAuth() {
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid: KID, alg: "ES256", use: "sig" };
  const auth = { privateKey, userMetadata: {}, userRequests: 0 };
  auth.server = createServer((req, res) => {
    const send = (status, body) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.url === "/auth/v1/.well-known/jwks.json") return send(200, { keys: [jwk] });
    if (req.url === "/auth/v1/user" && req.headers.authorization?.startsWith("Bearer ")) {
      auth.userRequests += 1;
      return send(200, {
        id: USER_ID,
        aud: "authenticated",
        role: "authenticated",
        email: "alice@example.com",
        app_metadata: { provider: "email", providers: ["email"], roles: ["editor"] },
        user_metadata: auth.userMetadata,
        created_at: "2026-01-01T00:00:00Z",
      });
    }
    send(404, { message: "not found" });
  });
  await new Promise((resolve) => auth.server.listen(0, "127.0.0.1", resolve));
  auth.url = `http://127.0.0.1:${auth.server.address().port}`;
  auth.issuer = `${auth.url}/auth/v1`;
  return auth;
}

/** An access token as Supabase Auth issues it: ES256 with the project's key. */
function accessToken(auth, { sub = USER_ID, exp = "1h", key = auth.privateKey, iss = auth.issuer, roles = ["editor"] } = {}) {
  return new SignJWT({
    aud: "authenticated",
    role: "authenticated",
    email: "alice@example.com",
    session_id: "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
    app_metadata: { provider: "email", providers: ["email"], roles },
    user_metadata: {},
    aal: "aal1",
    is_anonymous: false,
  })
    .setProtectedHeader({ alg: "ES256", kid: KID, typ: "JWT" })
    .setIssuer(iss)
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(exp)
    .sign(key);
}

/**
 * supabase-js builds its Realtime client eagerly and, on Node 20, wants a WebSocket class for it;
 * nothing here subscribes, so it gets one that refuses to connect.
 */
class NoRealtime {
  constructor() {
    throw new Error("the identity suite never opens Supabase Realtime");
  }
}

/**
 * The cookies @supabase/ssr's server client writes after `setSession`: {name: value} as `setAll`
 * received them (emptied stale chunks dropped), values serialized for a Cookie header as the
 * `cookie` package's `serialize` does (encodeURIComponent).
 */
async function ssrCookies(auth, token, { cookieEncoding } = {}) {
  const written = [];
  const supabase = createServerClient(auth.url, ANON_KEY, {
    ...(cookieEncoding ? { cookieEncoding } : {}),
    realtime: { transport: NoRealtime },
    cookies: {
      getAll: () => [],
      setAll: (cookies) => written.push(...cookies),
    },
  });
  const { error } = await supabase.auth.setSession({ access_token: token, refresh_token: "r3fr3sh-t0k3n-never-read" });
  assert.equal(error, null, String(error));
  assert.ok(written.length > 0, "@supabase/ssr wrote no cookie");
  return Object.fromEntries(
    written.filter(({ value }) => value !== "").map(({ name, value }) => [name, encodeURIComponent(value)]),
  );
}

/** The cookie name the library chose (chunk suffix removed). */
const baseName = (cookies) => Object.keys(cookies)[0].replace(/\.\d+$/, "");

/** The README's block, its Supabase URLs pointed at `auth` and its cookie named as the library names it. */
function config(auth, cookieName) {
  const block = readmeConfig("supabase-cookie");
  assert.match(block, /https:\/\/your-project-ref\.supabase\.co/);
  assert.match(block, /sb-your-project-ref-auth-token/);
  return block
    .replaceAll("https://your-project-ref.supabase.co", auth.url)
    .replaceAll("sb-your-project-ref-auth-token", cookieName);
}

describe("Supabase (the README's cookie configuration, cookies written by @supabase/ssr)", () => {
  let auth;
  let stack;
  let name;
  before(async () => {
    auth = await startSupabaseAuth();
    // The name @supabase/ssr derives from the project URL: sb-<first label of the host>-auth-token.
    name = baseName(await ssrCookies(auth, await accessToken(auth)));
    assert.equal(name, "sb-127-auth-token");
    stack = await startServe({ issuers: config(auth, name) });
  });
  after(async () => {
    await stopServeCheckingLog(stack);
    auth?.server.close();
  });

  /** Every access token sent is a secret the log must not hold. */
  const remember = (token) => {
    stack.secrets.add(token);
    return token;
  };

  test("the session cookie gives the user's clientId and the app_metadata role's capability", async () => {
    const token = remember(await accessToken(auth));
    const cookies = await ssrCookies(auth, token);
    assert.deepEqual(Object.keys(cookies), [name]);
    assert.ok(cookies[name].startsWith("base64-"), cookies[name].slice(0, 12));
    const res = await requestToken(stack, cookies);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, USER_ID);
    assert.deepEqual(sortedCapability(capabilityOf(res.body)), editorCapability(USER_ID));
    assert.equal(res.body.keyName, "identityApp.testKey");
  });

  test("a long session is chunked by @supabase/ssr into NAME.0, NAME.1 … and joined again", async () => {
    auth.userMetadata = { bio: "b".repeat(6000), name: "Zoë" };
    try {
      const token = remember(await accessToken(auth));
      const cookies = await ssrCookies(auth, token);
      assert.deepEqual(Object.keys(cookies).sort(), [`${name}.0`, `${name}.1`, `${name}.2`]);
      assert.ok(cookies[`${name}.0`].startsWith("base64-"));
      const res = await requestToken(stack, cookies);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.equal(res.body.clientId, USER_ID);
      assert.deepEqual(sortedCapability(capabilityOf(res.body)), editorCapability(USER_ID));
      // A chunk lost on the way is a gap, not a shorter session.
      delete cookies[`${name}.1`];
      assertRefused(await requestToken(stack, cookies), "session_token_malformed");
    } finally {
      auth.userMetadata = {};
    }
  });

  test("the raw (un-prefixed JSON) encoding of cookieEncoding: 'raw' and older versions is read too", async () => {
    const token = remember(await accessToken(auth, { roles: [] }));
    const cookies = await ssrCookies(auth, token, { cookieEncoding: "raw" });
    assert.ok(cookies[name].startsWith("%7B%22access_token%22"), cookies[name].slice(0, 24));
    const res = await requestToken(stack, cookies);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, USER_ID);
    assert.deepEqual(capabilityOf(res.body), { [`chat:${USER_ID}`]: ["publish", "subscribe"] });
  });

  test("the access token is also accepted as Bearer by the same issuer", async () => {
    const token = remember(await accessToken(auth));
    const res = await requestToken(stack, {}, { authorization: `Bearer ${token}` });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, USER_ID);
  });

  /** A session cookie encoded with @supabase/ssr's exported encoder and chunker, around `token`. */
  const encoded = (session) =>
    Object.fromEntries(
      createChunks(name, `base64-${stringToBase64URL(JSON.stringify(session))}`).map((c) => [c.name, c.value]),
    );

  test("an access token signed by another key, expired, or for another project is refused", async () => {
    const { privateKey: other } = await generateKeyPair("ES256");
    const forged = remember(await accessToken(auth, { key: other }));
    assertRefused(await requestToken(stack, encoded({ access_token: forged })), "signature_invalid");
    const expired = remember(await accessToken(auth, { exp: Math.floor(Date.now() / 1000) - 60 }));
    assertRefused(await requestToken(stack, encoded({ access_token: expired })), "session_token_expired");
    const elsewhere = remember(await accessToken(auth, { iss: "https://zzzzzzzzzzzzzzzzzzzz.supabase.co/auth/v1" }));
    assertRefused(await requestToken(stack, encoded({ access_token: elsewhere })), "issuer_unknown");
  });

  test("a cookie that is not a session is malformed, with a message naming what is wrong", async () => {
    const token = remember(await accessToken(auth));
    for (const [value, words] of [
      [`base64-${"!".repeat(40)}`, "not base64url"],
      [`base64-${stringToBase64URL(JSON.stringify({ refresh_token: "r" }))}`, "no access_token"],
      [`base64-${stringToBase64URL(JSON.stringify([token, "r"]))}`, "does not hold a session object"],
      [token, "does not hold a session object"],
    ]) {
      const res = await requestToken(stack, { [name]: value });
      assertRefused(res, "session_token_malformed");
      assert.match(res.body.error.message, new RegExp(words), JSON.stringify(res.body));
    }
    const huge = Object.fromEntries([...Array(8).keys()].map((i) => [`${name}.${i}`, "A".repeat(4200)]));
    assertRefused(await requestToken(stack, huge), "session_token_too_large");
  });

  test("the sidecar reads the project's key set only, never Supabase Auth's /user", async () => {
    const token = remember(await accessToken(auth));
    const cookies = await ssrCookies(auth, token);
    const before = auth.userRequests;
    const res = await requestToken(stack, cookies);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(auth.userRequests, before);
  });
});
