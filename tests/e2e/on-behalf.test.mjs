// Publishing over REST on behalf of a realtime connection (TM2h,
// https://ably.com/docs/pub-sub/advanced#publish-on-behalf): a backend's `Ably.Rest` publishes a
// message carrying a browser's `connection.key` as `connectionKey`; the message is that
// connection's — its `connectionId` and clientId — so a connection with `echoMessages: false` is
// not sent it. A key that names no open connection is refused with 40006, as Ably does.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  Ably,
  closeClient,
  connected,
  messageInbox,
  protocols,
  realtime,
  rejection,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

describe("REST publish on behalf of a realtime connection (connectionKey)", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`the message carries the connection's id and clientId, and is not echoed to it [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol, options: { echoMessages: false } });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await Promise.all([connected(alice), connected(sam)]);
      const clients = [alice, sam];
      const name = uniqueChannel("orders:alice");
      const aliceInbox = await messageInbox(alice, alice.channels.get(name));
      const samInbox = await messageInbox(sam, sam.channels.get(name));
      const backend = restWithKey(stack(), { protocol });

      await within(
        backend.channels.get(name).publish({ name: "draft", data: "for alice", connectionKey: alice.connection.key }),
        "the backend's publish on behalf of alice",
        { clients },
      );
      const onBehalf = await samInbox.waitFor((m) => m.name === "draft", "the message on behalf of alice at sam");
      assert.equal(onBehalf.connectionId, alice.connection.id, "attributed to alice's connection");
      assert.equal(onBehalf.clientId, "alice", "with alice's clientId");
      assert.equal(onBehalf.data, "for alice");
      assert.equal(onBehalf.connectionKey, undefined, "a received message never carries a connectionKey (TM2h)");

      // A message without connectionKey reaches alice; the one on her behalf did not (echo off).
      await within(backend.channels.get(name).publish("plain", "for everyone"), "a plain publish", { clients });
      await aliceInbox.waitFor((m) => m.name === "plain", "the plain message at alice");
      await samInbox.waitFor((m) => m.name === "plain", "the plain message at sam");
      assert.deepEqual(
        aliceInbox.items.map((m) => m.name),
        ["plain"],
        "alice, with echoMessages false, was not sent the message published on her behalf",
      );
      const history = await within(backend.channels.get(name).history(), "history", { clients });
      assert.equal(history.items.find((m) => m.name === "draft")?.connectionId, alice.connection.id);

      await Promise.all(clients.map(closeClient));
    });
  }

  it("a key that names no open connection, or another clientId, is refused with 40006", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const connectionKey = alice.connection.key;
    // README.md's backend snippet, word for word ("Embedded broker"), so that it stays true.
    const { apiKey: key, broker: { port } } = stack();
    const rest = new Ably.Rest({ key, endpoint: "127.0.0.1", port, tls: false });
    const backend = rest;
    const channel = backend.channels.get(uniqueChannel("orders:alice"));
    await within(channel.publish("hello", "from the README's snippet"), "the snippet's publish", { clients: [alice] });
    assert.equal((await within(channel.history(), "the snippet's history", { clients: [alice] })).items[0].data, "from the README's snippet");

    for (const wrong of ["not-a-connection-key", `${connectionKey}x`]) {
      const error = await rejection(channel.publish({ name: "m", data: "x", connectionKey: wrong }), `publish with ${wrong}`, {
        clients: [alice],
      });
      assert.equal(error.code, 40006, error.message);
      assert.equal(error.statusCode, 400);
      assert.match(error.message, /invalid connectionKey/);
    }

    const mismatch = await rejection(
      channel.publish({ name: "m", data: "x", clientId: "bob", connectionKey }),
      "publish as bob on behalf of alice",
      { clients: [alice] },
    );
    assert.equal(mismatch.code, 40006, mismatch.message);
    assert.match(mismatch.message, /mismatched clientId/);

    // Once the connection has closed, its key names nothing.
    await closeClient(alice);
    const closed = await rejection(channel.publish({ name: "m", data: "x", connectionKey }), "publish on behalf of a closed connection", {
      clients: [],
    });
    assert.equal(closed.code, 40006);
    const history = await within(channel.history(), "history after the refusals", { clients: [alice] });
    assert.deepEqual(history.items.map((m) => m.name), ["hello"], "nothing refused was stored");
  });
});
