// Keys with capabilities: `ably-tokend broker` with two [[ably.keys]] tables, one unrestricted and
// one restricted to publish and subscribe on orders:* (read from an environment variable). The real
// client, holding the restricted key, is held to that key's capability: REST publishes outside it
// get 40160, a token it requests without a capability gets exactly the key's, one asking for more
// is narrowed, one asking for nothing the key allows is refused, and a realtime client cannot attach
// outside it.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";

import { Ably, channelState, closeClient, connected, messageInbox, rejection, uniqueChannel, within } from "./helpers.mjs";
import { BINARY, ROOT, Tail } from "../support/node/stack.mjs";

const TEST = { timeout: 30_000 };
const FULL_KEY = "e2e.full:full-key-secret-0123456789";
const ORDERS_KEY = "e2e.orders:orders-key-secret-0123456789";
const ORDERS_CAPABILITY = '{"orders:*":["publish","subscribe"]}';

/** `ably-tokend broker` on a free port with the two keys; resolves with {port, proc, log}. */
async function startBroker() {
  const dir = mkdtempSync(path.join(tmpdir(), "tokend-keys-"));
  const config = path.join(dir, "keys.toml");
  writeFileSync(
    config,
    `[[ably.keys]]
key = "${FULL_KEY}"

[[ably.keys]]
key_env = "E2E_ORDERS_KEY"
capability = { "orders:*" = ["publish", "subscribe"] }

[broker]
bind = "127.0.0.1:0"

[log]
format = "json"
level = "info"
`,
  );
  // Only this file configures the broker: ABLY_API_KEY would be refused beside [[ably.keys]], and
  // ABLY_TOKEND_* (the harness's ABLY_TOKEND_BIN among them) would be read as settings.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => name !== "ABLY_API_KEY" && !name.startsWith("ABLY_TOKEND_")),
  );
  Object.assign(env, { E2E_ORDERS_KEY: ORDERS_KEY, NO_COLOR: "1" });
  const proc = spawn(BINARY, ["broker", "--config", config], { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"] });
  const log = new Tail(200);
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
          if (fields.message === "broker listening") resolve(fields.port);
        } catch {
          // not a JSON log line
        }
      }
    };
    proc.stdout.setEncoding("utf8").on("data", onData);
    proc.stderr.setEncoding("utf8").on("data", onData);
    proc.on("exit", (code) => reject(new Error(`the broker exited (${code}) before listening:\n${log.text()}`)));
  });
  const exited = new Promise((resolve) => proc.on("exit", resolve));
  const broker = { proc, log, exited, port: await within(port, "the broker's listening line"), dir };
  broker.text = () => text;
  return broker;
}

async function stopBroker(broker) {
  if (!broker) return;
  broker.proc.kill("SIGTERM");
  await within(broker.exited, "the broker to exit");
  rmSync(broker.dir, { recursive: true, force: true });
}

function options(broker, key) {
  return {
    key,
    endpoint: "127.0.0.1",
    port: broker.port,
    tls: false,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    wsConnectivityCheckUrl: `ws://127.0.0.1:${broker.port}/`,
  };
}

describe("a key with a capability", () => {
  let broker;
  before(async () => {
    broker = await startBroker();
  });
  after(async () => {
    await stopBroker(broker);
    const secret = ORDERS_KEY.split(":")[1];
    assert.ok(!broker.text().includes(secret), "the restricted key's secret never appears in the broker's log");
  });

  it("Ably.Rest with it publishes inside its capability and gets 40160 outside", TEST, async () => {
    const rest = new Ably.Rest(options(broker, ORDERS_KEY));
    await within(rest.channels.get(uniqueChannel("orders:1")).publish("n", "inside"), "a publish to orders:…");
    const err = await rejection(rest.channels.get(uniqueChannel("chat")).publish("n", "outside"), "a publish to chat:…");
    assert.equal(err.code, 40160, err.message);
    assert.equal(err.statusCode, 401);
    // The unrestricted key still reaches chat.
    const full = new Ably.Rest(options(broker, FULL_KEY));
    await within(full.channels.get(uniqueChannel("chat")).publish("n", "anywhere"), "a publish with the full key");
  });

  it("a token requested without a capability gets exactly the key's; wider is narrowed; disjoint is 40160", TEST, async () => {
    const rest = new Ably.Rest(options(broker, ORDERS_KEY));
    const plain = await within(rest.auth.requestToken(), "requestToken()");
    assert.equal(plain.capability, ORDERS_CAPABILITY);
    const wide = await within(
      rest.auth.requestToken({ capability: { "*": ["*"], "orders:1": ["history", "publish"] } }),
      "requestToken({capability: wider})",
    );
    assert.equal(wide.capability, '{"orders:*":["publish","subscribe"],"orders:1":["publish"]}');
    const err = await rejection(rest.auth.requestToken({ capability: { "chat:*": ["subscribe"] } }), "requestToken(disjoint)");
    assert.equal(err.statusCode, 401);
    assert.equal(err.code, 40160, err.message);
    assert.match(err.message, /e2e\.orders/);
  });

  it("a realtime client on a token from it cannot attach outside the key's capability", TEST, async () => {
    const client = new Ably.Realtime({ ...options(broker, ORDERS_KEY), useTokenAuth: true });
    try {
      await connected(client);
      assert.equal(client.auth.tokenDetails.capability, ORDERS_CAPABILITY);
      const outside = client.channels.get(uniqueChannel("chat"));
      const err = await rejection(outside.attach(), "attaching chat:…", { clients: [client] });
      assert.equal(err.code, 40160, err.message);
      await channelState(outside, "failed", { clients: [client] });

      const name = uniqueChannel("orders:2");
      const inside = client.channels.get(name);
      const inbox = await messageInbox(client, inside);
      await within(inside.publish("status", "ready"), "a publish to orders:…", { clients: [client] });
      const got = await inbox.waitFor((m) => m.name === "status", "its own message back");
      assert.equal(got.data, "ready");
    } finally {
      await closeClient(client);
    }
  });
});
