// Scaffolding for the browser suite: the real `ably-tokend dev` binary (sidecar, embedded broker and
// development issuer), a small web app server that serves the test page and the `ably` package's
// browser build and reverse-proxies the token routes to the sidecar, and headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core; never a browser Playwright downloads).
//
// Every wait has a deadline. When one expires, the error says what was awaited and appends what the
// page shows, the tail of the page's own ably-js log (micro level: every protocol message), and the
// tail of the binary's stderr.

import { once } from "node:events";
import { mkdirSync, readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

import Ably from "ably";
import { chromium } from "playwright-core";

import * as shared from "../support/node/stack.mjs";

export { Ably };

const here = path.dirname(fileURLToPath(import.meta.url));
const root = shared.ROOT;

/** Debian's chromium (`apt-get install chromium`); `CHROMIUM` overrides. */
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

/** Where screenshots go (not committed). */
export const SHOTS = path.join(root, "target", "browser");

export const WAIT_MS = 15_000;

const VERBOSE = process.env.BROWSER_VERBOSE === "1";

// The `ably` package's browser build: its package.json "browser" entry (build/ably.js, UMD, sets
// the global `Ably`).
const ablyDir = path.join(here, "node_modules", "ably");
const ablyPackage = JSON.parse(readFileSync(path.join(ablyDir, "package.json"), "utf8"));
export const ABLY_VERSION = ablyPackage.version;
export const ABLY_BROWSER_BUNDLE = path.join(ablyDir, ablyPackage.browser);

// ---------------------------------------------------------------------------------------------
// Bounded waiting

/** Resolve with `promise`, or reject after `ms` naming `what` (and `explain()`'s text). */
export function within(promise, what, { ms = WAIT_MS, explain } = {}) {
  return shared.within(promise, what, { ms, explain });
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// The dev stack

/**
 * Start `ably-tokend dev --port 0 --broker-port 0 --json ...args` and wait (bounded) for its one
 * JSON ready line: {sidecar, broker: {host, port}, apiKey, sessionUrl}.
 */
export function startStack(args = []) {
  return shared.startStack({ args, verbose: VERBOSE });
}

/**
 * SIGTERM the binary and await its exit (SIGKILL after EXIT_MS); then its whole log must hold
 * neither the API key's secret nor any session token minted for it (nor such a token's signature),
 * the session cookie included.
 */
export async function stopStack(stack) {
  if (!stack || stack.exited) return stack?.exited ?? null;
  const exit = await shared.stopProcess(stack);
  shared.assertNoSecretsLogged(stack);
  return exit;
}

/** A session JWT for `sub` with `roles` from the development issuer. */
export function mintSession(stack, sub, roles = "") {
  return shared.mintSession(stack, sub, { roles }, { ms: WAIT_MS });
}

/** A REST client with the run's API key, as the app's backend would publish. */
export function backend(stack) {
  return new Ably.Rest({
    key: stack.apiKey,
    endpoint: stack.broker.host,
    port: stack.broker.port,
    tls: false,
    fallbackHosts: [],
  });
}

// ---------------------------------------------------------------------------------------------
// The web app's server: one origin (http://127.0.0.1:<random port>)

const PAGE_FILES = {
  "/": ["text/html; charset=utf-8", path.join(here, "page", "index.html")],
  "/page.js": ["text/javascript; charset=utf-8", path.join(here, "page", "page.js")],
  "/ably.js": ["text/javascript; charset=utf-8", ABLY_BROWSER_BUNDLE],
};

// Request headers the proxy passes to the sidecar, and response headers it passes back.
const PROXIED_REQUEST_HEADERS = ["cookie", "authorization", "accept", "content-type", "user-agent"];
const PROXIED_RESPONSE_HEADERS = ["content-type", "cache-control", "x-ably-errorcode", "x-ably-errormessage"];

/**
 * Start the web app's server on 127.0.0.1 with a random port. It serves the page, its script and
 * the ably browser build; `/config.json` (the broker's address); `/login?sub=&roles=&next=`
 * (signs the user in: mints a session from the dev issuer and sets it as the `__session` cookie,
 * as Clerk does, then redirects to `next`); `/api/session?sub=&roles=` (the session token as text,
 * standing in for Clerk's `getToken()`); and reverse-proxies `/api/ably-token` and `/api/ably-jwt`
 * to the sidecar (as a Next.js rewrite would), passing the Cookie header through. Every request it
 * gets is recorded in `hits`.
 */
export async function startPageServer(label) {
  const app = { label, stack: null, hits: [] };
  const server = http.createServer((req, res) => {
    handle(app, req, res).catch((error) => {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`page server error: ${error.message}`);
    });
  });
  server.listen(0, "127.0.0.1");
  await within(once(server, "listening"), `the ${label} page server to listen`);
  app.port = server.address().port;
  app.origin = `http://127.0.0.1:${app.port}`;
  app.close = () =>
    new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    });
  return app;
}

async function handle(app, req, res) {
  const url = new URL(req.url, app.origin);
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  app.hits.push({
    method: req.method,
    path: url.pathname,
    cookie: req.headers.cookie ?? null,
    authorization: req.headers.authorization ?? null,
    origin: req.headers.origin ?? null,
  });

  const file = PAGE_FILES[url.pathname];
  if (file && req.method === "GET") {
    res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" });
    res.end(readFileSync(file[1]));
    return;
  }
  if (!app.stack) {
    res.writeHead(503, { "content-type": "text/plain" });
    res.end("no dev stack yet");
    return;
  }
  const stack = app.stack;
  switch (url.pathname) {
    case "/config.json": {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "no-store" });
      res.end(JSON.stringify({ broker: stack.broker }));
      return;
    }
    case "/login": {
      const session = await mintSession(stack, url.searchParams.get("sub"), url.searchParams.get("roles") ?? "");
      const next = url.searchParams.get("next") ?? "/";
      if (!next.startsWith("/") || next.startsWith("//")) throw new Error(`next must be a path: ${next}`);
      res.writeHead(302, {
        location: next,
        "set-cookie": `__session=${session}; Path=/; SameSite=Lax`,
        "cache-control": "no-store",
      });
      res.end();
      return;
    }
    case "/api/session": {
      const session = await mintSession(stack, url.searchParams.get("sub"), url.searchParams.get("roles") ?? "");
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" });
      res.end(session);
      return;
    }
    case "/api/ably-token":
    case "/api/ably-jwt": {
      const target = new URL(url.pathname + url.search, stack.sidecar);
      const headers = {};
      for (const name of PROXIED_REQUEST_HEADERS) {
        if (req.headers[name]) headers[name] = req.headers[name];
      }
      const upstream = await fetch(target, {
        method: req.method,
        headers,
        body: chunks.length && req.method !== "GET" && req.method !== "HEAD" ? Buffer.concat(chunks) : undefined,
        redirect: "manual",
        signal: AbortSignal.timeout(WAIT_MS),
      });
      const out = {};
      for (const name of PROXIED_RESPONSE_HEADERS) {
        const value = upstream.headers.get(name);
        if (value) out[name] = value;
      }
      res.writeHead(upstream.status, out);
      res.end(Buffer.from(await upstream.arrayBuffer()));
      return;
    }
    default:
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
  }
}

// ---------------------------------------------------------------------------------------------
// Chromium

/** Launch Debian's chromium headless with a fresh profile (Playwright makes a new temporary one). */
export async function launchBrowser() {
  return within(
    chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      chromiumSandbox: false,
      timeout: 30_000,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    }),
    `${CHROMIUM} to start`,
    { ms: 30_000 },
  );
}

/**
 * A fresh browser context (its own cookies) with one page, recording every request the page
 * makes, the responses' CORS headers, failed requests, WebSockets and console errors.
 */
export async function openPage(browser, stack) {
  const context = await browser.newContext({ viewport: { width: 900, height: 640 } });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const seen = { requests: [], responses: [], failed: [], sockets: [], console: [], pageErrors: [] };
  page.on("request", (r) => seen.requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  page.on("response", (r) => seen.responses.push({ url: r.url(), status: r.status(), headers: r.headers() }));
  page.on("requestfailed", (r) => seen.failed.push({ url: r.url(), error: r.failure()?.errorText ?? "" }));
  page.on("websocket", (ws) => seen.sockets.push(ws.url()));
  page.on("console", (m) => {
    if (VERBOSE) process.stderr.write(`[page console ${m.type()}] ${m.text()}\n`);
    if (m.type() === "error") seen.console.push(m.text());
  });
  page.on("pageerror", (e) => seen.pageErrors.push(String(e)));
  const view = { context, page, seen, stack };
  view.explain = () => explainPage(view);
  return view;
}

/** What the page shows and logged, for failure messages. */
async function explainPage(view) {
  let shown = "(page unreadable)";
  let log = "";
  try {
    const got = await view.page.evaluate(() => ({
      text: document.body.innerText,
      log: (window.__pageLog ?? []).slice(-60).join("\n"),
    }));
    shown = got.text;
    log = got.log;
  } catch (error) {
    shown = `(page unreadable: ${error.message})`;
  }
  return [
    `--- the page shows ---\n${shown}`,
    `--- the page's ably-js log (last lines) ---\n${log || "(empty)"}`,
    `--- failed requests ---\n${view.seen.failed.map((f) => `${f.url} ${f.error}`).join("\n") || "(none)"}`,
    `--- console errors ---\n${view.seen.console.join("\n") || "(none)"}`,
    `--- ably-tokend stderr (last lines) ---\n${view.stack?.stderr.text(30) || "(empty)"}`,
  ].join("\n");
}

/** The text of the element with this id. */
export async function shown(view, id) {
  return ((await view.page.textContent(`#${id}`)) ?? "").trim();
}

/** Poll until `predicate(text of #id)` holds (bounded); returns the text. */
export async function waitShown(view, id, predicate, what, ms = WAIT_MS) {
  const end = Date.now() + ms;
  for (;;) {
    const text = await shown(view, id);
    if (predicate(text)) return text;
    if (Date.now() > end) {
      throw new Error(`timed out after ${ms} ms waiting for the page to show ${what} (#${id} is "${text}")\n${await view.explain()}`);
    }
    await sleep(50);
  }
}

/** Close the page's Ably client (bounded), then its browser context. */
export async function closePage(view) {
  if (!view) return;
  try {
    await within(
      view.page.evaluate(
        () =>
          new Promise((resolve) => {
            const client = window.__ably;
            if (!client || ["closed", "failed", "initialized"].includes(client.connection.state)) {
              client?.close();
              resolve();
              return;
            }
            client.connection.once("closed", resolve);
            client.connection.once("failed", resolve);
            client.close();
          }),
      ),
      "the page's ably client to close",
      { ms: 5_000 },
    );
  } catch {
    // the context goes anyway
  }
  await view.context.close().catch(() => {});
}

/** A screenshot of the page in target/browser/NAME.png. */
export async function screenshot(view, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, `${name}.png`);
  await view.page.screenshot({ path: file, fullPage: true });
  return file;
}

/** True when a URL's host is on loopback. */
export function onLoopback(url) {
  const host = new URL(url).hostname;
  return host === "127.0.0.1" || host === "localhost" || host === "[::1]" || host.startsWith("127.");
}
