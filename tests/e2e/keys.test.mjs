// Keys with capabilities: `ably-tokend broker` with two [[ably.keys]] tables, one unrestricted and
// one restricted to publish and subscribe on orders:* (read from an environment variable). The real
// client, holding the restricted key, is held to that key's capability: REST publishes outside it
// get 40160, a token it requests without a capability gets exactly the key's, one asking for more
// is narrowed, one asking for nothing the key allows is refused, and a realtime client cannot attach
// outside it.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Ably,
  channelState,
  closeClient,
  connected,
  keyClientOptions,
  messageInbox,
  rejection,
  startBroker,
  stopBroker,
  uniqueChannel,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };
const FULL_KEY = "e2e.full:full-key-secret-0123456789";
const ORDERS_KEY = "e2e.orders:orders-key-secret-0123456789";
const ORDERS_CAPABILITY = '{"orders:*":["publish","subscribe"]}';

/** The broker's configuration: the two keys, the restricted one read from E2E_ORDERS_KEY. */
const CONFIG = `[[ably.keys]]
key = "${FULL_KEY}"

[[ably.keys]]
key_env = "E2E_ORDERS_KEY"
capability = { "orders:*" = ["publish", "subscribe"] }

[broker]
bind = "127.0.0.1:0"

[log]
format = "json"
level = "info"
`;

describe("a key with a capability", () => {
  let broker;
  before(async () => {
    broker = await startBroker({ config: CONFIG, env: { E2E_ORDERS_KEY: ORDERS_KEY } });
  });
  after(async () => {
    await stopBroker(broker);
    const secret = ORDERS_KEY.split(":")[1];
    assert.ok(!broker.text().includes(secret), "the restricted key's secret never appears in the broker's log");
  });

  it("Ably.Rest with it publishes inside its capability and gets 40160 outside", TEST, async () => {
    const rest = new Ably.Rest(keyClientOptions(broker.port, ORDERS_KEY));
    await within(rest.channels.get(uniqueChannel("orders:1")).publish("n", "inside"), "a publish to orders:…");
    const err = await rejection(rest.channels.get(uniqueChannel("chat")).publish("n", "outside"), "a publish to chat:…");
    assert.equal(err.code, 40160, err.message);
    assert.equal(err.statusCode, 401);
    // The unrestricted key still reaches chat.
    const full = new Ably.Rest(keyClientOptions(broker.port, FULL_KEY));
    await within(full.channels.get(uniqueChannel("chat")).publish("n", "anywhere"), "a publish with the full key");
  });

  it("a token requested without a capability gets exactly the key's; wider is narrowed; disjoint is 40160", TEST, async () => {
    const rest = new Ably.Rest(keyClientOptions(broker.port, ORDERS_KEY));
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
    const client = new Ably.Realtime({ ...keyClientOptions(broker.port, ORDERS_KEY), useTokenAuth: true });
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
