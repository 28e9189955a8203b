// The browser path (issue 4, item 7): the `ably` npm package's browser build, in headless Chromium,
// gets its credentials from ably-tokend through `authUrl`:
//   (a) same origin: the web app (origin A) reverse-proxies /api/ably-token to the sidecar and the
//       browser sends the `__session` cookie by itself; no Authorization header anywhere;
//   (b) cross origin: the page on origin A calls the sidecar's own origin B with
//       `authHeaders: { Authorization }`; the sidecar answers the CORS preflight because A is in
//       its cors_allowed_origins (`dev --cors-origin A`), and a page on any other origin (C) is
//       refused by the browser.
// Each test reads what the page shows (connection state, clientId, the message it received, error
// codes) from the DOM.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  ABLY_VERSION,
  backend,
  closePage,
  launchBrowser,
  onLoopback,
  openPage,
  screenshot,
  shown,
  sleep,
  startPageServer,
  startStack,
  stopStack,
  waitShown,
} from "./helpers.mjs";

const TEST = { timeout: 60_000 };

describe("the ably browser build through ably-tokend's authUrl, in headless Chromium", () => {
  let browser;
  let appA; // the web app's origin, allowed by --cors-origin
  let appC; // another origin, not allowed
  let stack;

  before(async () => {
    // The page servers first: their random ports make the origins the stack must allow.
    appA = await startPageServer("A (allowed)");
    appC = await startPageServer("C (not allowed)");
    stack = await startStack(["--cors-origin", appA.origin]);
    appA.stack = stack;
    appC.stack = stack;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close().catch(() => {});
    let exit;
    try {
      exit = await stopStack(stack); // also: nothing it logged holds the key secret or a session
    } finally {
      await appA?.close();
      await appC?.close();
    }
    assert.ok(!exit || exit.code === 0, `ably-tokend exited with ${JSON.stringify(exit)}`);
  });

  /** Wait until the page is connected as `sub` and attached to its order channel. */
  async function connectedAs(view, sub) {
    await waitShown(view, "state", (t) => t === "connected", "connection state connected");
    assert.equal(await shown(view, "client-id"), sub, "clientId shown by the page");
    await waitShown(view, "channel-state", (t) => t === "attached", "its order channel attached");
    assert.equal(await shown(view, "channel"), `orders:${sub}:status`);
  }

  /** Publish from the backend (the API key, over REST) and wait until the page shows it. */
  async function deliveredTo(view, sub) {
    const data = `shipped ${Math.random().toString(36).slice(2, 10)}`;
    await backend(stack).channels.get(`orders:${sub}:status`).publish("status", data);
    await waitShown(view, "messages", (t) => t.includes(data), `the published message "${data}"`);
    const items = await view.page.$$eval("#messages li", (lis) => lis.map((li) => li.textContent));
    assert.deepEqual(items, [`status: ${data}`], "exactly the one message, name and data");
  }

  function assertLoopbackOnly(view) {
    const urls = [...view.seen.requests.map((r) => r.url), ...view.seen.sockets];
    const away = urls.filter((u) => !onLoopback(u));
    assert.deepEqual(away, [], "every request and WebSocket of the page stays on loopback");
    const broker = `ws://${stack.broker.host}:${stack.broker.port}/`;
    assert.ok(
      view.seen.sockets.some((u) => u.startsWith(broker)),
      `the page opened its WebSocket to the embedded broker ${broker}: ${view.seen.sockets.join(", ")}`,
    );
  }

  async function assertNoErrorShown(view) {
    assert.equal(await shown(view, "error"), "", "the page shows no error");
    assert.deepEqual(view.seen.pageErrors, [], "no uncaught exception in the page");
  }

  for (const route of ["/api/ably-token", "/api/ably-jwt"]) {
    it(`same origin, __session cookie only: ${route} proxied by the web app`, TEST, async () => {
      const hitsBefore = appA.hits.length;
      const view = await openPage(browser, stack);
      try {
        const next = `/?auth=cookie&authUrl=${encodeURIComponent(route)}`;
        await view.page.goto(`${appA.origin}/login?sub=alice&next=${encodeURIComponent(next)}`);
        assert.equal(await shown(view, "auth"), "cookie");
        assert.equal(await shown(view, "version"), `ably-js/${ABLY_VERSION} browser`);
        const cookies = await view.context.cookies(appA.origin);
        assert.deepEqual(cookies.map((c) => c.name), ["__session"], "signed in: the __session cookie is set");

        await connectedAs(view, "alice");
        await deliveredTo(view, "alice");
        await assertNoErrorShown(view);
        assert.equal(await shown(view, "state"), "connected");
        assertLoopbackOnly(view);

        // The token came through the web app's origin, authenticated by the cookie alone.
        const authHits = appA.hits.slice(hitsBefore).filter((h) => h.path === route);
        assert.ok(authHits.length >= 1, `the page asked ${route} on its own origin`);
        for (const hit of authHits) {
          assert.match(hit.cookie ?? "", /(^|;\s*)__session=[\w-]+\.[\w-]+\.[\w-]+/, "the browser sent the __session cookie");
          assert.equal(hit.authorization, null, "no Authorization header: the cookie is what authenticates");
        }
        const toSidecar = view.seen.requests.filter((r) => r.url.startsWith(stack.sidecar));
        assert.deepEqual(toSidecar, [], "the browser never talked to the sidecar's origin directly");

        if (route === "/api/ably-token") await screenshot(view, "same-origin-cookie");
      } finally {
        await closePage(view);
      }
    });
  }

  it("same origin without the __session cookie: 40100 shown, never connected", TEST, async () => {
    const hitsBefore = appA.hits.length;
    const view = await openPage(browser, stack);
    try {
      await view.page.goto(`${appA.origin}/?auth=cookie`); // not signed in
      await waitShown(view, "error-code", (t) => t !== "", "an error code");
      const codes = [await shown(view, "error-code"), await shown(view, "error-cause-code")];
      assert.ok(codes.includes("40100"), `the page shows 40100 (no session) as the error or its cause: ${codes}`);
      await sleep(1_000);
      assert.notEqual(await shown(view, "state"), "connected");
      const states = (await shown(view, "states")).split(" → ");
      assert.ok(!states.includes("connected"), `the connection never reached connected: ${states.join(" → ")}`);
      assert.equal(await shown(view, "client-id"), "");
      const authHits = appA.hits.slice(hitsBefore).filter((h) => h.path === "/api/ably-token");
      assert.ok(authHits.length >= 1, "the page did ask its authUrl");
      assert.ok(authHits.every((h) => !h.cookie && !h.authorization), "with neither cookie nor header");
    } finally {
      await closePage(view);
    }
  });

  // ably-js (XHR) makes the auth request credentialed (withCredentials) when its authHeaders key is
  // spelled exactly "authorization"; the browser then also needs Access-Control-Allow-Credentials.
  const CROSS_ORIGIN = [
    { name: "GET, Authorization", method: "GET", headerName: "Authorization", shot: "cross-origin-header" },
    { name: "POST, Authorization", method: "POST", headerName: "Authorization" },
    { name: "GET, authorization (credentialed XHR)", method: "GET", headerName: "authorization" },
  ];
  for (const variant of CROSS_ORIGIN) {
    it(`cross origin, ${variant.name} header: the sidecar's CORS lets the allowed origin in`, TEST, async () => {
      const authUrl = `${stack.sidecar}/api/ably-token`;
      const hitsBefore = appA.hits.length;
      const view = await openPage(browser, stack);
      try {
        const query = new URLSearchParams({
          auth: "header",
          sub: "alice",
          authUrl,
          authMethod: variant.method,
          headerName: variant.headerName,
        });
        await view.page.goto(`${appA.origin}/?${query}`);
        assert.equal(await shown(view, "auth"), "header");
        assert.equal(await shown(view, "auth-url"), authUrl);

        await connectedAs(view, "alice");
        await deliveredTo(view, "alice");
        await assertNoErrorShown(view);
        assertLoopbackOnly(view);

        // The browser went to the sidecar's origin itself, with the header, and the answer carried
        // the CORS grant for origin A.
        const calls = view.seen.requests.filter((r) => r.url.startsWith(authUrl) && r.method === variant.method);
        assert.ok(calls.length >= 1, `the page called the sidecar's /api/ably-token cross-origin with ${variant.method}`);
        for (const call of calls) {
          assert.match(call.headers.authorization ?? "", /^Bearer [\w-]+\.[\w-]+\.[\w-]+$/, "with Authorization: Bearer <session>");
        }
        const answers = view.seen.responses.filter((r) => r.url.startsWith(authUrl) && r.status === 200);
        assert.ok(answers.length >= 1, "the sidecar answered 200");
        for (const answer of answers) {
          assert.equal(answer.headers["access-control-allow-origin"], appA.origin);
        }
        const proxied = appA.hits.slice(hitsBefore).filter((h) => h.path.startsWith("/api/ably-"));
        assert.deepEqual(proxied, [], "nothing went through the web app's proxy");

        if (variant.shot) await screenshot(view, variant.shot);
      } finally {
        await closePage(view);
      }
    });
  }

  it("cross origin from an origin not in cors_allowed_origins: the browser blocks it", TEST, async () => {
    const authUrl = `${stack.sidecar}/api/ably-token`;
    const view = await openPage(browser, stack);
    try {
      await view.page.goto(`${appC.origin}/?auth=header&sub=alice&authUrl=${encodeURIComponent(authUrl)}`);
      await waitShown(view, "error-code", (t) => t !== "", "an error code");
      // Give the client time to (not) get further: it must still not connect.
      await sleep(2_000);
      const state = await shown(view, "state");
      assert.ok(["connecting", "disconnected", "suspended", "failed"].includes(state), `state ${state}`);
      const states = (await shown(view, "states")).split(" → ");
      assert.ok(!states.includes("connected"), `the connection never reached connected: ${states.join(" → ")}`);
      assert.equal(await shown(view, "client-id"), "");
      assert.equal(await shown(view, "messages"), "");
      assert.ok(
        view.seen.failed.some((f) => f.url.startsWith(authUrl)),
        `the browser failed the request to the sidecar (CORS): ${JSON.stringify(view.seen.failed)}`,
      );
      assert.ok(
        !view.seen.sockets.some((u) => u.includes("accessToken=")),
        "no WebSocket with a token was ever opened",
      );
      // ably-js reports a failed authUrl request (no HTTP answer it may read) as 80019 caused by
      // 40170; a refusal by the sidecar itself would be caused by 40100/40300.
      assert.equal(await shown(view, "error-code"), "80019");
      assert.equal(await shown(view, "error-cause-code"), "40170");
      assert.ok((await shown(view, "error")).length > 0, "the page shows the error");
      assert.ok(
        view.seen.console.some((line) => line.includes("blocked by CORS policy")),
        `Chromium says CORS blocked it: ${view.seen.console.join(" | ")}`,
      );

      await screenshot(view, "cross-origin-not-allowed");
    } finally {
      await closePage(view);
    }
  });

  it("the preflight is answered from cors_allowed_origins and nothing else", TEST, async () => {
    const authUrl = `${stack.sidecar}/api/ably-token`;
    const preflight = (origin) =>
      fetch(authUrl, {
        method: "OPTIONS",
        headers: {
          origin,
          "access-control-request-method": "GET",
          "access-control-request-headers": "accept,authorization",
        },
        signal: AbortSignal.timeout(10_000),
      });

    const allowed = await preflight(appA.origin);
    assert.ok(allowed.status >= 200 && allowed.status < 300, `preflight from A answered ${allowed.status}`);
    assert.equal(allowed.headers.get("access-control-allow-origin"), appA.origin);
    const methods = (allowed.headers.get("access-control-allow-methods") ?? "").toUpperCase();
    assert.ok(methods.includes("GET") && methods.includes("POST"), `allow-methods: ${methods}`);
    const headers = (allowed.headers.get("access-control-allow-headers") ?? "").toLowerCase();
    assert.ok(headers.includes("authorization"), `allow-headers: ${headers}`);

    for (const origin of [appC.origin, "http://localhost:" + appA.port, "null", "https://evil.example"]) {
      const refused = await preflight(origin);
      assert.equal(refused.headers.get("access-control-allow-origin"), null, `no CORS grant for ${origin}`);
      const plain = await fetch(authUrl, { headers: { origin }, signal: AbortSignal.timeout(10_000) });
      assert.equal(plain.headers.get("access-control-allow-origin"), null, `no CORS grant on GET for ${origin}`);
    }
  });
});
