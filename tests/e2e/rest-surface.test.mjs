// The rest of the REST surface ably-js calls: PaginatedResult's first/current/next links, stats()
// (with the key; refused to a token without `stats`),
// batchPublish() with per-channel results, a channel's status(), a key-authenticated client's
// clientId (X-Ably-ClientId), presence extras on enter/update/leave, in presence.get() and SYNC,
// and presence history.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  Ably,
  closeClient,
  connected,
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

const TEST = { timeout: 45_000 };

const data = (page) => page.items.map((m) => m.data);

describe("REST surface", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`history pages link first, current and next [${protocol}]`, TEST, async () => {
      const rest = restWithKey(stack(), { protocol });
      const channel = rest.channels.get(uniqueChannel("orders:alice"));
      for (let i = 1; i <= 5; i++) {
        await within(channel.publish("n", String(i)), `REST publish ${i}`, { clients: [rest] });
      }
      const page1 = await within(channel.history({ limit: 2 }), "history(limit 2)", { clients: [rest] });
      assert.deepEqual(data(page1), ["5", "4"]);
      assert.equal(page1.hasFirst(), true);
      assert.equal(page1.hasCurrent(), true);
      assert.equal(page1.isLast(), false);

      const page2 = await within(page1.next(), "page 2", { clients: [rest] });
      assert.deepEqual(data(page2), ["3", "2"]);
      assert.equal(page2.isLast(), false);
      // current() asks for the same page again; first() goes back to the start.
      await within(channel.publish("n", "6"), "a publish between pages", { clients: [rest] });
      const again = await within(page2.current(), "page 2 again", { clients: [rest] });
      assert.deepEqual(data(again), ["3", "2"], "current() reloads the page it came from, not the newest");
      const first = await within(page2.first(), "first page", { clients: [rest] });
      assert.deepEqual(data(first), ["6", "5"], "first() runs the query again from the newest");

      const page3 = await within(page2.next(), "page 3", { clients: [rest] });
      assert.deepEqual(data(page3), ["1"]);
      assert.equal(page3.isLast(), true);
      assert.equal(await page3.next(), null, "next() after the last page is null");
      const current3 = await within(page3.current(), "the last page again", { clients: [rest] });
      assert.deepEqual(data(current3), ["1"]);

      // Forwards with a time window: the links carry start and end.
      const forwards = await within(
        channel.history({ direction: "forwards", limit: 2, start: 0, end: Date.now() + 60_000 }),
        "history forwards",
        { clients: [rest] },
      );
      assert.deepEqual(data(forwards), ["1", "2"]);
      const forwards2 = await within(forwards.next(), "forwards page 2", { clients: [rest] });
      assert.deepEqual(data(forwards2), ["3", "4"]);
      assert.deepEqual(data(await within(forwards2.first(), "forwards first", { clients: [rest] })), ["1", "2"]);
    });
  }

  it("stats() answers an empty page that pages", TEST, async () => {
    const rest = restWithKey(stack());
    const page = await within(rest.stats({ unit: "hour", limit: 10 }), "rest.stats()", { clients: [rest] });
    assert.deepEqual(page.items, []);
    assert.equal(page.isLast(), true);
    assert.deepEqual((await within(page.first(), "stats first()", { clients: [rest] })).items, []);
    const error = await rejection(rest.stats({ unit: "fortnight" }), "stats with an unknown unit", { clients: [rest] });
    assert.equal(error.code, 40003);
    assert.equal(error.statusCode, 400);
  });

  it("stats() needs the stats capability: a user's token without it gets 40160", TEST, async () => {
    const rest = await restAsUser(stack(), { sub: "sam", roles: ["support"] });
    const error = await rejection(rest.stats(), "stats() with a token that lacks stats", { clients: [rest] });
    assert.equal(error.code, 40160);
    assert.equal(error.statusCode, 401);
    assert.match(error.message, /does not permit stats/);
  });

  for (const protocol of protocols) {
    it(`batchPublish reaches every channel, and fails only where the capability does not reach [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const one = uniqueChannel("orders:alice");
      const two = uniqueChannel("orders:alice");
      const atOne = await messageInbox(alice, alice.channels.get(one));
      const atTwo = await messageInbox(alice, alice.channels.get(two));

      // A backend with the key: one spec, two channels.
      const rest = restWithKey(stack(), { protocol });
      const single = await within(
        rest.batchPublish({ channels: [one, two], messages: [{ name: "status", data: "packed" }, { name: "eta", data: "5pm" }] }),
        "a single-spec batchPublish",
        { clients: [rest] },
      );
      assert.equal(single.successCount, 2);
      assert.equal(single.failureCount, 0);
      assert.deepEqual(single.results.map((r) => r.channel), [one, two]);
      for (const result of single.results) {
        assert.equal(typeof result.messageId, "string");
        assert.deepEqual(result.serials, [`${result.messageId}:0`, `${result.messageId}:1`]);
      }
      for (const inbox of [atOne, atTwo]) {
        const [status, eta] = await inbox.waitForAll([(m) => m.name === "status", (m) => m.name === "eta"], "both messages");
        assert.equal(status.data, "packed");
        assert.equal(eta.data, "5pm");
        assert.equal(status.clientId, undefined);
      }

      // sam (support) may publish to orders:* but not to announcements: that channel fails alone.
      const samRest = await restAsUser(stack(), { sub: "sam", roles: ["support"], protocol });
      const specs = await within(
        samRest.batchPublish([
          { channels: [one, "announcements"], messages: [{ name: "note", data: "from sam" }] },
          { channels: [two], messages: { name: "note", data: "to two" } },
        ]),
        "sam's two-spec batchPublish",
        { clients: [samRest] },
      );
      assert.equal(specs.length, 2);
      assert.equal(specs[0].successCount, 1);
      assert.equal(specs[0].failureCount, 1);
      const refused = specs[0].results.find((r) => r.channel === "announcements");
      assert.equal(refused.error.code, 40160);
      assert.equal(refused.error.statusCode, 401);
      assert.equal(specs[1].successCount, 1);
      const fromSam = await atOne.waitFor((m) => m.name === "note", "sam's batch message");
      assert.equal(fromSam.data, "from sam");
      assert.equal(fromSam.clientId, "sam", "a batch publish with a token carries the token's clientId");
      assert.equal((await atTwo.waitFor((m) => m.name === "note", "sam's second spec")).data, "to two");

      // sam cannot speak for alice in a batch either (the single-publish rule).
      const impersonation = await within(
        samRest.batchPublish({ channels: [one], messages: [{ name: "note", data: "x", clientId: "alice" }] }),
        "a batch naming another clientId",
        { clients: [samRest] },
      );
      assert.equal(impersonation.failureCount, 1);
      assert.equal(impersonation.results[0].error.code, 40012);
      await closeClient(alice);
    });
  }

  it("a channel's status() counts who is on it, where the capability allows channel-metadata", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol: "json" });
    await Promise.all([connected(alice), connected(sam)]);
    const name = uniqueChannel("orders:alice");
    await messageInbox(alice, alice.channels.get(name));
    await messageInbox(sam, sam.channels.get(name));
    await within(alice.channels.get(name).presence.enter("here"), "alice's enter", { clients: [alice] });

    const rest = restWithKey(stack());
    const details = await within(rest.channels.get(name).status(), "status()", { clients: [rest] });
    assert.equal(details.channelId, name);
    assert.equal(details.status.isActive, true);
    assert.deepEqual(details.status.occupancy.metrics, {
      connections: 2,
      presenceConnections: 1,
      presenceMembers: 1,
      presenceSubscribers: 2,
      publishers: 2,
      subscribers: 2,
    });

    const idle = await within(rest.channels.get(uniqueChannel("orders:nobody")).status(), "status() of an idle channel", {
      clients: [rest],
    });
    assert.equal(idle.status.isActive, false);
    assert.equal(idle.status.occupancy.metrics.connections, 0);

    const aliceRest = await restAsUser(stack(), { sub: "alice" });
    const error = await rejection(aliceRest.channels.get(name).status(), "alice's status() without channel-metadata", {
      clients: [aliceRest],
    });
    assert.equal(error.code, 40160);
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });

  for (const protocol of protocols) {
    it(`a key-authenticated client with a clientId publishes as that clientId [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const name = uniqueChannel("orders:alice");
      const inbox = await messageInbox(alice, alice.channels.get(name));
      const bot = restWithKey(stack(), { protocol, options: { clientId: "order-bot ✓" } });
      await within(bot.channels.get(name).publish("status", "shipped"), "the bot's publish", { clients: [bot] });
      await within(
        bot.batchPublish({ channels: [name], messages: [{ name: "batch", data: "too" }] }),
        "the bot's batch publish",
        { clients: [bot] },
      );
      const [status, batch] = await inbox.waitForAll([(m) => m.name === "status", (m) => m.name === "batch"], "the bot's messages");
      assert.equal(status.clientId, "order-bot ✓");
      assert.equal(batch.clientId, "order-bot ✓");
      const error = await rejection(
        bot.channels.get(name).publish({ name: "status", data: "x", clientId: "someone-else" }),
        "a publish naming another clientId",
        { clients: [bot] },
      );
      assert.equal(error.code, 40012);
      await closeClient(alice);
    });
  }

  for (const protocol of protocols) {
    it(`presence extras travel with enter, update and leave, in get() and SYNC, and in presence history [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol, mode: "jwt" });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");
      const aliceChannel = alice.channels.get(name);
      const atSam = await presenceInbox(sam, sam.channels.get(name));

      // ably-js sends extras when enter()/update()/leave() is given a PresenceMessage.
      const lock = { locks: [{ id: "seat-1", status: "pending" }] };
      const held = { locks: [{ id: "seat-1", status: "locked" }] };
      const enter = Ably.Realtime.PresenceMessage.fromValues({ data: "choosing", extras: lock });
      await within(aliceChannel.presence.enter(enter), "alice's enter with extras", { clients: [alice] });
      const seenEnter = await atSam.waitFor((p) => p.action === "enter" && p.clientId === "alice", "alice's enter");
      assert.equal(seenEnter.data, "choosing");
      assert.deepEqual(seenEnter.extras, lock);

      const update = Ably.Realtime.PresenceMessage.fromValues({ data: "paying", extras: held });
      await within(aliceChannel.presence.update(update), "alice's update with extras", { clients: [alice] });
      const seenUpdate = await atSam.waitFor((p) => p.action === "update" && p.clientId === "alice", "alice's update");
      assert.deepEqual(seenUpdate.extras, held);

      // A late joiner gets the member, extras included, through SYNC; REST presence.get() too.
      const late = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await connected(late);
      const members = await within(late.channels.get(name).presence.get(), "the late joiner's presence.get()", { clients: [late] });
      assert.deepEqual(
        members.map((m) => [m.clientId, m.data, m.extras]),
        [["alice", "paying", held]],
      );
      const rest = restWithKey(stack(), { protocol });
      const restMembers = await within(rest.channels.get(name).presence.get(), "REST presence.get()", { clients: [rest] });
      assert.deepEqual(restMembers.items.map((m) => m.extras), [held]);

      const leave = Ably.Realtime.PresenceMessage.fromValues({ data: "done", extras: { locks: [] } });
      await within(aliceChannel.presence.leave(leave), "alice's leave with extras", { clients: [alice] });
      const seenLeave = await atSam.waitFor((p) => p.action === "leave" && p.clientId === "alice", "alice's leave");
      assert.deepEqual(seenLeave.extras, { locks: [] });

      // Presence history, newest first, paged, from the realtime channel (sam has history on orders:*).
      const history = await within(sam.channels.get(name).presence.history({ limit: 2 }), "presence.history(limit 2)", {
        clients: [sam],
      });
      assert.deepEqual(
        history.items.map((p) => [p.action, p.clientId, p.data]),
        [
          ["leave", "alice", "done"],
          ["update", "alice", "paying"],
        ],
      );
      assert.equal(history.isLast(), false);
      const older = await within(history.next(), "presence history page 2", { clients: [sam] });
      assert.deepEqual(
        older.items.map((p) => [p.action, p.data, p.extras]),
        [["enter", "choosing", lock]],
      );
      assert.equal(older.isLast(), true);
      const forwards = await within(rest.channels.get(name).presence.history({ direction: "forwards" }), "REST presence history forwards", {
        clients: [rest],
      });
      assert.deepEqual(forwards.items.map((p) => p.action), ["enter", "update", "leave"]);

      // A member whose client closes leaves, and that leave is in the history too.
      await within(aliceChannel.presence.enter("back"), "alice enters again", { clients: [alice] });
      await atSam.waitFor((p) => p.action === "enter" && p.data === "back", "alice's second enter");
      await closeClient(alice);
      await atSam.waitFor((p) => p.action === "leave" && p.data === "back", "alice's leave on close");
      const latest = await within(rest.channels.get(name).presence.history({ limit: 1 }), "the newest presence event", {
        clients: [rest],
      });
      assert.deepEqual(latest.items.map((p) => [p.action, p.clientId]), [["leave", "alice"]]);

      const aliceRest = await restAsUser(stack(), { sub: "alice" });
      const refused = await rejection(aliceRest.channels.get("orders:bob:x").presence.history(), "presence history of bob's orders", {
        clients: [aliceRest],
      });
      assert.equal(refused.code, 40160);
      await Promise.all([closeClient(sam), closeClient(late)]);
    });
  }
});
