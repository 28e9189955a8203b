// Better Auth, the real package: `betterAuth()` (pinned in package-lock.json) with its memory
// adapter and email-and-password sign-in, served on loopback by `toNodeHandler` from
// better-auth/node, in this process. A user signs up and in over HTTP; the session cookies Better
// Auth sets go to the real `ably-tokend serve`, configured with the README's `better-auth` block
// (only its URL pointed at this server), which asks `GET /api/auth/get-session` who the caller is.
// The server records what each get-session request carried, so what the sidecar forwards is seen.
//
// The admin plugin (better-auth/plugins) gives each new user the role "support", which the block's
// `roles_claim = "/user/role"` reads; the cookie cache (`session.cookieCache`) makes sign-in set a
// second cookie, `better-auth.session_data`, which the block leaves behind.

import assert from "node:assert/strict";
import http from "node:http";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";

import { betterAuth } from "better-auth";
import { memoryAdapter } from "better-auth/adapters/memory";
import { toNodeHandler } from "better-auth/node";
import { admin, bearer } from "better-auth/plugins";

import {
  capabilityOf,
  readmeConfig,
  requestToken,
  startServe,
  stopServeCheckingLog,
} from "./helpers.mjs";

const PASSWORD = "correct horse battery staple";

/**
 * A Better Auth app on a free loopback port. `options` is merged into betterAuth()'s. Resolves with
 * {auth, baseURL, port, seen, secret, close}; `seen` lists {path, cookie, authorization} of every
 * get-session request.
 */
async function startBetterAuth(options = {}) {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  const baseURL = `http://127.0.0.1:${port}`;
  const secret = randomBytes(32).toString("base64url");
  const auth = betterAuth({
    database: memoryAdapter({ user: [], session: [], account: [], verification: [] }),
    emailAndPassword: { enabled: true },
    secret,
    baseURL,
    session: { cookieCache: { enabled: true } },
    telemetry: { enabled: false },
    plugins: [admin({ defaultRole: "support" })],
    ...options,
  });
  const handler = toNodeHandler(auth);
  const seen = [];
  server.on("request", (req, res) => {
    if (req.url.startsWith("/api/auth/get-session")) {
      seen.push({ path: req.url, cookie: req.headers.cookie, authorization: req.headers.authorization });
    }
    handler(req, res);
  });
  const close = () => new Promise((resolve) => server.close(resolve));
  return { auth, baseURL, port, seen, secret, close };
}

/** POST /api/auth/<path> as a browser on the app's origin would. Returns the fetch Response. */
function post(app, route, body, cookie) {
  return fetch(`${app.baseURL}/api/auth/${route}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      origin: app.baseURL,
      ...(cookie ? { cookie } : {}),
    },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
}

/** The Set-Cookie headers of `res` as {name: value} (values as set, still URL-encoded). */
function cookiesSet(res) {
  return Object.fromEntries(
    res.headers.getSetCookie().map((line) => {
      const pair = line.split(";")[0];
      const eq = pair.indexOf("=");
      return [pair.slice(0, eq), pair.slice(eq + 1)];
    }),
  );
}

/** Sign in over HTTP; resolves with {cookies, user, res}. */
async function signIn(app, email) {
  const res = await post(app, "sign-in/email", { email, password: PASSWORD });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return { cookies: cookiesSet(res), user: body.user, res };
}

/** The README's block with its URL pointed at `app`. */
function blockFor(app) {
  const block = readmeConfig("better-auth");
  const issuers = block.replace("http://127.0.0.1:3000/", `${app.baseURL}/`);
  assert.notEqual(issuers, block, "the block's url was rewritten");
  return issuers;
}

describe("Better Auth (the README's better-auth block against the real package)", () => {
  let app;
  let stack;
  let user;
  before(async () => {
    app = await startBetterAuth();
    const res = await post(app, "sign-up/email", { email: "ada@example.com", password: PASSWORD, name: "Ada" });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    user = body.user;
    assert.equal(user.role, "support", "the admin plugin's defaultRole");
    stack = await startServe({ issuers: blockFor(app) });
    stack.secrets.add(app.secret);
  });
  after(async () => {
    await stopServeCheckingLog(stack);
    await app?.close();
  });

  test("the cookies sign-in set give the user's id and role; only the session token is forwarded", async () => {
    const { cookies } = await signIn(app, "ada@example.com");
    assert.deepEqual(Object.keys(cookies).sort(), ["better-auth.session_data", "better-auth.session_token"]);
    const before = app.seen.length;
    const res = await requestToken(stack, { ...cookies, theme: "dark" });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, user.id);
    assert.deepEqual(capabilityOf(res.body), {
      [`chat:${user.id}`]: ["publish", "subscribe"],
      "support:*": ["presence", "subscribe"],
    });
    // One get-session request, carrying the session token alone: the cookie cache and the app's
    // other cookies stay behind, and no Authorization header goes.
    assert.equal(app.seen.length, before + 1);
    const asked = app.seen.at(-1);
    assert.equal(asked.path, "/api/auth/get-session");
    assert.equal(asked.cookie, `better-auth.session_token=${cookies["better-auth.session_token"]}`);
    assert.equal(asked.authorization, undefined);
  });

  test("a tampered session cookie is refused: Better Auth answers null", async () => {
    const { cookies } = await signIn(app, "ada@example.com");
    const value = cookies["better-auth.session_token"];
    // `<token>.<HMAC>`: keep the token, change the signature's first character.
    const dot = value.indexOf(".");
    const sig = value.slice(dot + 1);
    const tampered = `${value.slice(0, dot)}.${sig[0] === "A" ? "B" : "A"}${sig.slice(1)}`;
    const res = await requestToken(stack, { "better-auth.session_token": tampered });
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_invalid");
    assert.equal(res.body.error.code, 40100);
    assert.equal(app.seen.at(-1).cookie, `better-auth.session_token=${tampered}`, "Better Auth was asked");
  });

  test("a session signed out in the app is refused", async () => {
    const { cookies } = await signIn(app, "ada@example.com");
    const header = Object.entries(cookies)
      .map(([name, value]) => `${name}=${value}`)
      .join("; ");
    const out = await post(app, "sign-out", {}, header);
    assert.equal(out.status, 200, await out.text());
    const res = await requestToken(stack, { "better-auth.session_token": cookies["better-auth.session_token"] });
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_invalid");
  });

  test("the cookie cache alone is not a credential, and Better Auth is not asked", async () => {
    const { cookies } = await signIn(app, "ada@example.com");
    const before = app.seen.length;
    const res = await requestToken(stack, { "better-auth.session_data": cookies["better-auth.session_data"] });
    assert.equal(res.status, 401, JSON.stringify(res.body));
    assert.equal(res.body.error.reason, "session_token_missing");
    assert.equal(app.seen.length, before);
  });
});

describe("Better Auth over https cookie names, and its bearer plugin (the block plus forward_authorization)", () => {
  let app;
  let stack;
  let user;
  before(async () => {
    // `useSecureCookies` is what an https baseURL turns on: the `__Secure-` cookie names.
    app = await startBetterAuth({
      advanced: { useSecureCookies: true },
      plugins: [admin({ defaultRole: "support" }), bearer()],
    });
    const res = await post(app, "sign-up/email", { email: "grace@example.com", password: PASSWORD, name: "Grace" });
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    user = body.user;
    stack = await startServe({ issuers: `${blockFor(app)}forward_authorization = true\n` });
    stack.secrets.add(app.secret);
  });
  after(async () => {
    await stopServeCheckingLog(stack);
    await app?.close();
  });

  test("the __Secure- session cookie is read", async () => {
    const { cookies } = await signIn(app, "grace@example.com");
    const name = "__Secure-better-auth.session_token";
    assert.ok(cookies[name], `sign-in set ${Object.keys(cookies).join(", ")}`);
    const res = await requestToken(stack, cookies);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, user.id);
    assert.equal(app.seen.at(-1).cookie, `${name}=${cookies[name]}`);
  });

  test("the bearer plugin's set-auth-token value, sent as Bearer, is forwarded as it came", async () => {
    const { res: signedIn } = await signIn(app, "grace@example.com");
    const token = signedIn.headers.get("set-auth-token");
    assert.match(token ?? "", /^[^.]+\.[^.]+$/, "the plugin hands out <token>.<signature>");
    stack.secrets.add(token);
    for (const part of token.split(".")) stack.secrets.add(part);
    const res = await requestToken(stack, {}, { authorization: `Bearer ${token}` });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body.clientId, user.id);
    assert.deepEqual(capabilityOf(res.body), {
      [`chat:${user.id}`]: ["publish", "subscribe"],
      "support:*": ["presence", "subscribe"],
    });
    const asked = app.seen.at(-1);
    assert.equal(asked.authorization, `Bearer ${token}`);
    assert.equal(asked.cookie, undefined);
  });
});
