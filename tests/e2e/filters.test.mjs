// Subscription filters (https://ably.com/docs/pub-sub/advanced#subscription-filters) with the real
// client: `ably-tokend broker` with a key holding `[*]*` (as ably-js's own test app key 5 does) and an
// unrestricted one (`*`). A client's `channels.getDerived(name, { filter })` channel is sent only the
// messages whose name and extras.headers pass the filter, while its plain channel and another
// client's get every one; publishing on the derived channel is refused; the unrestricted key cannot
// attach it, and a filter the broker cannot read fails the attach.

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
import { Tail } from "../support/node/stack.mjs";

const TEST = { timeout: 30_000 };
const QUALIFIED_KEY = "e2e.qualified:qualified-key-secret-0123456789";
const PLAIN_KEY = "e2e.plain:plain-key-secret-0123456789";

/** ably-js's filter and messages (test/realtime/message.test.js, "subscribes to filtered channel"). */
const FILTER = 'name == `"filtered"` && headers.number == `26095`';
const MESSAGES = [
  { name: "filtered", data: "pass 1", extras: { headers: { name: "Lorem Choo", number: 26095, bool: true } } },
  { name: "filtered", data: "no extras" },
  { name: "filtered", data: "pass 2", extras: { headers: { name: "John Bull", number: 26095, bool: false } } },
  { name: "filtered", data: "no headers" },
  { name: "filtered", data: "other number", extras: { headers: { name: "John Bull", number: 12345, bool: false } } },
  { name: "end", data: "last" },
];

/** The broker's configuration: the two keys. */
const CONFIG = `[[ably.keys]]
key = "${QUALIFIED_KEY}"
capability = { "[*]*" = ["*"] }

[[ably.keys]]
key = "${PLAIN_KEY}"

[broker]
bind = "127.0.0.1:0"

[log]
format = "json"
level = "info"
`;

describe("subscription filters", () => {
  let broker;
  const clients = [];
  const realtime = (key, useBinaryProtocol, label) => {
    // The client's own log kept for diagnostics (a timeout prints it), not printed.
    const log = new Tail(200);
    const client = new Ably.Realtime(keyClientOptions(broker.port, key, { useBinaryProtocol, logHandler: (line) => log.push(line) }));
    client.e2e = { label, log };
    clients.push(client);
    return client;
  };
  before(async () => {
    broker = await startBroker({ config: CONFIG });
  });
  after(async () => {
    await Promise.all(clients.map((c) => closeClient(c).catch(() => {})));
    await stopBroker(broker);
    assert.ok(!broker.text().includes(QUALIFIED_KEY.split(":")[1]), "the key's secret never appears in the log");
  });

  it("getDerived: the filtered channel gets the two matching messages, the plain ones all six (msgpack and JSON)", TEST, async () => {
    for (const binary of [true, false]) {
      const name = uniqueChannel("kiosk");
      const alice = realtime(QUALIFIED_KEY, binary, `alice/${binary ? "msgpack" : "json"}`);
      const bob = realtime(QUALIFIED_KEY, !binary, "bob");
      await connected(alice);
      await connected(bob);
      const filtered = alice.channels.getDerived(name, { filter: FILTER });
      assert.match(filtered.name, new RegExp(`^\\[filter=[A-Za-z0-9+/=]+\\]${name}$`));
      const filteredInbox = await messageInbox(alice, filtered);
      const plain = alice.channels.get(name);
      const plainInbox = await messageInbox(alice, plain);
      const bobInbox = await messageInbox(bob, bob.channels.get(name));

      const rest = new Ably.Rest(keyClientOptions(broker.port, QUALIFIED_KEY, { useBinaryProtocol: true }));
      await within(rest.channels.get(name).publish(MESSAGES), "the REST publish of six messages");

      // As ably-js's test: once the plain channel has "end", the filtered one has its two.
      await plainInbox.waitFor((m) => m.name === "end", "the plain channel's last message");
      assert.deepEqual(
        filteredInbox.items.map((m) => m.data),
        ["pass 1", "pass 2"],
      );
      assert.deepEqual(
        filteredInbox.items.map((m) => m.extras.headers.name),
        ["Lorem Choo", "John Bull"],
      );
      assert.deepEqual(
        plainInbox.items.map((m) => m.data),
        MESSAGES.map((m) => m.data),
      );
      await bobInbox.waitFor((m) => m.name === "end", "bob's last message");
      assert.deepEqual(
        bobInbox.items.map((m) => m.data),
        MESSAGES.map((m) => m.data),
      );
      assert.equal(filtered.state, "attached");

      // A publish on the derived channel is refused: it is subscribe-only.
      const refused = await rejection(filtered.publish("filtered", "from the derived channel"), "a publish on the derived channel", {
        clients: [alice],
      });
      assert.equal(refused.code, 40160, refused.message);
      assert.match(refused.message, /subscribe-only/);
      assert.equal(filtered.state, "attached");
      assert.equal(alice.connection.state, "connected");
      await closeClient(alice);
      await closeClient(bob);
    }
  });

  it("the unrestricted key cannot attach a derived channel (40160); an unreadable filter fails the attach (40010)", TEST, async () => {
    const carol = realtime(PLAIN_KEY, true, "carol");
    await connected(carol);
    const name = uniqueChannel("kiosk");
    const derived = carol.channels.getDerived(name, { filter: FILTER });
    const denied = await rejection(derived.attach(), "attaching with an unrestricted key", { clients: [carol] });
    assert.equal(denied.code, 40160, denied.message);
    assert.match(denied.message, /\[\*\]\*/);
    await channelState(derived, "failed", { clients: [carol] });
    // The plain channel is the key's.
    await within(carol.channels.get(name).attach(), "attaching the plain channel", { clients: [carol] });

    const dave = realtime(QUALIFIED_KEY, true, "dave");
    await connected(dave);
    const unreadable = dave.channels.getDerived(name, { filter: "data == `\"x\"`" });
    const refused = await rejection(unreadable.attach(), "attaching with a filter on data", { clients: [dave] });
    assert.equal(refused.code, 40010, refused.message);
    assert.match(refused.message, /"data" cannot be filtered on/);
    await channelState(unreadable, "failed", { clients: [dave] });
    assert.equal(dave.connection.state, "connected");
    await closeClient(carol);
    await closeClient(dave);
  });
});
