// Ably.Rest against the broker: a backend publishing with the API key (the key the sidecar signs
// with), REST history and presence, and a REST client authenticated through the sidecar's authUrl,
// whose capability the broker enforces on REST too.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  closeClient,
  connected,
  memberSummary,
  messageInbox,
  presenceInbox,
  protocols,
  realtime,
  rejection,
  restAsUser,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

describe("Ably.Rest", () => {
  const stack = useStack();

  it("time() answers the broker's clock", TEST, async () => {
    const rest = restWithKey(stack());
    const before = Date.now();
    const time = await within(rest.time(), "rest.time()", { clients: [rest] });
    assert.equal(typeof time, "number");
    assert.ok(Math.abs(time - before) < 5000, `the broker's time ${time} is close to ours ${before}`);
  });

  for (const protocol of protocols) {
    it(`a backend publishes with the API key to orders:alice:status; alice receives it [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const name = uniqueChannel("orders:alice:status");
      const inbox = await messageInbox(alice, alice.channels.get(name));

      const rest = restWithKey(stack(), { protocol });
      const channel = rest.channels.get(name);
      await within(channel.publish("status", { order: 42, status: "dispatched" }), "the REST publish", { clients: [rest] });
      await within(
        channel.publish([
          { name: "eta", data: "tomorrow" },
          { name: "bytes", data: Buffer.from("raw\u0000bytes") },
        ]),
        "the REST batch publish",
        { clients: [rest] },
      );

      const [status, eta, bytes] = await inbox.waitForAll(
        [(m) => m.name === "status", (m) => m.name === "eta", (m) => m.name === "bytes"],
        "the backend's messages",
      );
      assert.deepEqual(status.data, { order: 42, status: "dispatched" });
      assert.equal(status.clientId, undefined, "a message published with the bare key has no clientId");
      assert.ok(status.id, "a delivered message has an id");
      assert.equal(eta.data, "tomorrow");
      assert.deepEqual([...bytes.data], [...Buffer.from("raw\u0000bytes")], "binary data arrives intact");
      assert.deepEqual(inbox.items.map((m) => m.name), ["status", "eta", "bytes"], "in publish order, once each");
      await closeClient(alice);
    });

    it(`REST history newest first with limit and pages [${protocol}]`, TEST, async () => {
      const rest = restWithKey(stack(), { protocol });
      const name = uniqueChannel("orders:alice");
      const channel = rest.channels.get(name);
      for (let i = 1; i <= 5; i++) {
        await within(channel.publish("n", String(i)), `REST publish ${i}`, { clients: [rest] });
      }
      const page1 = await within(channel.history({ limit: 2 }), "REST history(limit 2)", { clients: [rest] });
      assert.deepEqual(page1.items.map((m) => m.data), ["5", "4"]);
      assert.equal(page1.hasNext(), true);
      const page2 = await within(page1.next(), "REST history page 2", { clients: [rest] });
      assert.deepEqual(page2.items.map((m) => m.data), ["3", "2"]);
      const page3 = await within(page2.next(), "REST history page 3", { clients: [rest] });
      assert.deepEqual(page3.items.map((m) => m.data), ["1"]);
      assert.equal(page3.hasNext(), false);

      const forwards = await within(channel.history({ direction: "forwards", limit: 3 }), "REST history forwards", { clients: [rest] });
      assert.deepEqual(forwards.items.map((m) => m.data), ["1", "2", "3"]);
    });

    it(`REST presence lists the members realtime clients entered [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");
      const watch = await presenceInbox(sam, sam.channels.get(name));
      await within(alice.channels.get(name).presence.enter({ page: "checkout" }), "alice's enter", { clients: [alice] });
      await within(sam.channels.get(name).presence.enter("helping"), "sam's enter", { clients: [sam] });
      await watch.waitForAll(
        [(p) => p.clientId === "alice" && p.action === "enter", (p) => p.clientId === "sam" && p.action === "enter"],
        "both enters",
      );

      const rest = restWithKey(stack(), { protocol });
      const page = await within(rest.channels.get(name).presence.get(), "REST presence.get()", { clients: [rest] });
      assert.deepEqual(memberSummary(page.items), [
        { clientId: "alice", data: { page: "checkout" } },
        { clientId: "sam", data: "helping" },
      ]);
      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  it("a backend's announcement reaches every customer", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    const bob = await realtime(stack(), { sub: "bob", protocol: "json" });
    await Promise.all([connected(alice), connected(bob)]);
    const atAlice = await messageInbox(alice, alice.channels.get("announcements"));
    const atBob = await messageInbox(bob, bob.channels.get("announcements"));
    const text = `maintenance at ${Date.now()}`;
    await within(restWithKey(stack()).channels.get("announcements").publish("notice", text), "the announcement", {});
    for (const inbox of [atAlice, atBob]) {
      const m = await inbox.waitFor((x) => x.data === text, "the announcement");
      assert.equal(m.name, "notice");
    }
    await Promise.all([closeClient(alice), closeClient(bob)]);
  });

  it("a REST client authenticated through the authUrl reads its history but may not publish (40160)", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    await within(restWithKey(stack()).channels.get(name).publish("status", "packed"), "the backend's publish", {});

    const aliceRest = await restAsUser(stack(), { sub: "alice" });
    const channel = aliceRest.channels.get(name);
    const page = await within(channel.history(), "alice's REST history", { clients: [aliceRest] });
    assert.deepEqual(page.items.map((m) => [m.name, m.data]), [["status", "packed"]]);

    const error = await rejection(channel.publish("status", "cancelled"), "alice's REST publish", { clients: [aliceRest] });
    assert.equal(error.code, 40160, `REST publish refused with 40160, got ${error.code}: ${error.message}`);
    assert.equal(error.statusCode, 401);

    const other = await rejection(aliceRest.channels.get("orders:bob:status").history(), "alice's REST history of bob's orders", {
      clients: [aliceRest],
    });
    assert.equal(other.code, 40160);

    const after = await within(channel.history(), "history after the refused publish", { clients: [aliceRest] });
    assert.deepEqual(after.items.map((m) => m.data), ["packed"], "the refused message was not stored");
  });

  it("a REST client with a JWT from the authUrl publishes where its role allows", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const inbox = await messageInbox(alice, alice.channels.get(name));
    const samRest = await restAsUser(stack(), { sub: "sam", roles: ["support"], mode: "jwt" });
    await within(samRest.channels.get(name).publish("status", "refunded"), "sam's REST publish", { clients: [samRest] });
    const m = await inbox.waitFor((x) => x.name === "status", "sam's REST message");
    assert.equal(m.data, "refunded");
    assert.equal(m.clientId, "sam", "a REST publish with a token carries the token's clientId");
    await closeClient(alice);
  });
});
