// History after publishing: a realtime client whose token grants `history` reads the channel's
// messages newest first, with `limit` honoured and pages followed; without the capability the
// broker refuses with 40160.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  closeClient,
  connected,
  messageInbox,
  protocols,
  realtime,
  rejection,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

describe("history", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`alice reads sam's messages newest first, limit honoured, pages followed [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");
      const inbox = await messageInbox(alice, alice.channels.get(name));

      const samChannel = sam.channels.get(name);
      for (const [i, status] of ["placed", "packed", "shipped"].entries()) {
        await within(samChannel.publish("status", { step: i + 1, status }), `publish ${status}`, { clients: [sam] });
      }
      await inbox.waitForAll([1, 2, 3].map((step) => (m) => m.data?.step === step), "the three updates, live");

      const channel = alice.channels.get(name);
      const page1 = await within(channel.history({ limit: 2 }), "alice's history(limit 2)", { clients: [alice] });
      assert.deepEqual(
        page1.items.map((m) => m.data.status),
        ["shipped", "packed"],
        "newest first, and no more than the limit",
      );
      for (const m of page1.items) {
        assert.equal(m.name, "status");
        assert.equal(m.clientId, "sam");
        assert.ok(m.id, "stored messages keep their id");
        assert.ok(m.timestamp > 0, "stored messages keep their timestamp");
      }
      assert.equal(page1.hasNext(), true, "a third message remains: there is a next page");
      assert.equal(page1.isLast(), false);
      const page2 = await within(page1.next(), "the next page of history", { clients: [alice] });
      assert.deepEqual(page2.items.map((m) => m.data.status), ["placed"]);
      assert.equal(page2.hasNext(), false);

      const all = await within(channel.history(), "alice's history()", { clients: [alice] });
      assert.deepEqual(all.items.map((m) => m.data.step), [3, 2, 1], "the default direction is backwards");
      // Live and stored copies of a message are the same message.
      assert.deepEqual(
        all.items.map((m) => m.id).sort(),
        inbox.items.map((m) => m.id).sort(),
      );

      const forwards = await within(channel.history({ direction: "forwards" }), "history forwards", { clients: [alice] });
      assert.deepEqual(forwards.items.map((m) => m.data.step), [1, 2, 3]);

      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  it("history of a channel nothing was published on is empty", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const page = await within(alice.channels.get(uniqueChannel("orders:alice")).history(), "history of a quiet channel", {
      clients: [alice],
    });
    assert.deepEqual(page.items, []);
    assert.equal(page.hasNext(), false);
    await closeClient(alice);
  });

  it("history without the history capability is refused with 40160", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    // announcements: subscribe only for customers.
    const error = await rejection(alice.channels.get("announcements").history(), "alice's history of announcements", {
      clients: [alice],
    });
    assert.equal(error.code, 40160, `history refused with 40160, got ${error.code}: ${error.message}`);
    assert.equal(error.statusCode, 401);
    await closeClient(alice);
  });
});
