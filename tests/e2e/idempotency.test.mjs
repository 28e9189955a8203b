// Idempotent publishing (Ably features spec RSL1k, TM2a; https://ably.com/docs/pub-sub/advanced#idempotency):
// a message whose id the client set is delivered once and stored once per channel, however often it is
// published within two minutes, over REST (single and batch) and realtime; each retry still succeeds.
// The same id on another channel is a different message. Expiry after the window is tested in Rust
// with an injected clock (src/broker/message.rs, src/broker/hub.rs), as the window is not configurable.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { closeClient, connected, messageInbox, realtime, restWithKey, uniqueChannel, useStack, within } from "./helpers.mjs";

const TEST = { timeout: 30_000 };

/** Publishes a last message and waits for it, so anything published before it has arrived too. */
async function drain(publish, inbox, clients) {
  const marker = `end-${Math.random().toString(36).slice(2)}`;
  await within(publish("end", marker), "the closing publish", { clients });
  await inbox.waitFor((m) => m.data === marker, "the closing message");
  return inbox.items.filter((m) => m.name !== "end");
}

describe("idempotent publishing", () => {
  const stack = useStack();

  it("a REST retry with the same message ids is delivered and stored once, single and batch", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const name = uniqueChannel("orders:alice:idem");
    const inbox = await messageInbox(alice, alice.channels.get(name));

    const rest = restWithKey(stack(), { options: { idempotentRestPublishing: true } });
    const channel = rest.channels.get(name);
    // A retry publishes the very same messages again (RSL1k4, RSL1k5).
    const single = { id: "order-42-dispatched", name: "status", data: "dispatched" };
    const many = [
      { id: "batch-7:0", name: "eta", data: "5pm" },
      { id: "batch-7:1", name: "eta", data: "6pm" },
    ];
    for (const attempt of [1, 2]) {
      await within(channel.publish(single), `single publish, attempt ${attempt}`, { clients: [rest] });
      await within(channel.publish(many), `two-message publish, attempt ${attempt}`, { clients: [rest] });
      const batch = await within(
        rest.batchPublish({ channels: [name], messages: [{ id: "batched-1", name: "batched", data: "via POST /messages" }] }),
        `batchPublish, attempt ${attempt}`,
        { clients: [rest] },
      );
      assert.equal(batch.successCount, 1, "a duplicate batch publish still succeeds");
      assert.equal(batch.failureCount, 0);
    }
    // Without ids, idempotentRestPublishing makes ably-js set `<base64 random>:<index>` (RSL1k1); kept.
    await within(channel.publish("generated", "ids"), "a publish without ids", { clients: [rest] });

    const received = await drain((n, d) => channel.publish(n, d), inbox, [rest, alice]);
    assert.deepEqual(
      received.map((m) => m.id).slice(0, 4),
      ["order-42-dispatched", "batch-7:0", "batch-7:1", "batched-1"],
      "each client-supplied id once, in publish order, with its id",
    );
    assert.equal(received.length, 5, `one delivery per id: ${JSON.stringify(received.map((m) => m.id))}`);
    assert.match(received[4].id, /^[A-Za-z0-9+/_-]+=*:0$/, "the library's own id is kept");
    assert.deepEqual(
      received.map((m) => m.data),
      ["dispatched", "5pm", "6pm", "via POST /messages", "ids"],
    );

    const history = await within(channel.history({ direction: "forwards" }), "REST history", { clients: [rest] });
    assert.deepEqual(
      history.items.map((m) => m.id).slice(0, 5),
      [...received.map((m) => m.id)],
      "one history entry per id",
    );
    assert.equal(history.items.length, 6, "five messages and the closing one");
    await closeClient(alice);
  });

  it("a realtime publish repeated with the same id is delivered and stored once", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice", protocol: "json" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"], mode: "jwt" });
    await Promise.all([connected(alice), connected(sam)]);
    const name = uniqueChannel("orders:alice:idem");
    const inbox = await messageInbox(alice, alice.channels.get(name));
    const channel = sam.channels.get(name);

    const message = { id: "chat-1001", name: "chat", data: "hello once" };
    for (const attempt of [1, 2, 3]) {
      // Each is acknowledged: publish() resolves (an ACK, not a NACK).
      await within(channel.publish(message), `realtime publish, attempt ${attempt}`, { clients: [sam] });
    }
    const received = await drain((n, d) => channel.publish(n, d), inbox, [sam, alice]);
    assert.deepEqual(
      received.map((m) => [m.id, m.data, m.clientId]),
      [["chat-1001", "hello once", "sam"]],
    );

    const history = await within(channel.history(), "realtime history", { clients: [sam] });
    assert.deepEqual(
      history.items.filter((m) => m.name === "chat").map((m) => m.id),
      ["chat-1001"],
      "one history entry",
    );
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });

  it("the same id on another channel is another message", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam)]);
    const one = uniqueChannel("orders:alice:idem");
    const two = uniqueChannel("orders:alice:idem");
    const atOne = await messageInbox(alice, alice.channels.get(one));
    const atTwo = await messageInbox(alice, alice.channels.get(two));

    const rest = restWithKey(stack());
    await within(rest.channels.get(one).publish({ id: "shared-id", name: "n", data: "rest to one" }), "REST publish to one", {
      clients: [rest],
    });
    await within(sam.channels.get(two).publish({ id: "shared-id", name: "n", data: "realtime to two" }), "realtime publish to two", {
      clients: [sam],
    });
    // And once more on each: still one per channel.
    await within(sam.channels.get(one).publish({ id: "shared-id", name: "n", data: "again" }), "realtime retry to one", {
      clients: [sam],
    });
    await within(rest.channels.get(two).publish({ id: "shared-id", name: "n", data: "again" }), "REST retry to two", {
      clients: [rest],
    });

    const first = await drain((n, d) => rest.channels.get(one).publish(n, d), atOne, [rest, alice]);
    const second = await drain((n, d) => rest.channels.get(two).publish(n, d), atTwo, [rest, alice]);
    assert.deepEqual(first.map((m) => [m.id, m.data]), [["shared-id", "rest to one"]]);
    assert.deepEqual(second.map((m) => [m.id, m.data]), [["shared-id", "realtime to two"]]);
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });
});
