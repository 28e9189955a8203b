// Presence across clients: enter, update and leave seen by the others, a late joiner that gets the
// current members through SYNC (presence.get()), and a member whose client closes seen leaving.
// Run in msgpack (the Node client's default) and in JSON.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  closeClient,
  connected,
  memberSummary,
  presenceInbox,
  protocols,
  realtime,
  rejection,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 45_000 };

describe("presence", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`enter, update, get for a late joiner, leave, and leave on close [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol, mode: "jwt" });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");
      const aliceChannel = alice.channels.get(name);
      const samChannel = sam.channels.get(name);
      const atAlice = await presenceInbox(alice, aliceChannel);
      const atSam = await presenceInbox(sam, samChannel);

      // sam enters with data: alice sees `enter` from sam with that data.
      await within(samChannel.presence.enter({ status: "available", agent: "Sam" }), "sam's presence enter to be ACKed", {
        clients: [sam],
      });
      const samEnter = await atAlice.waitFor((p) => p.action === "enter" && p.clientId === "sam", "sam's enter");
      assert.deepEqual(samEnter.data, { status: "available", agent: "Sam" });
      assert.equal(samEnter.connectionId, sam.connection.id);

      // alice enters too (her customer role grants presence on orders:alice:*): sam sees it.
      await within(aliceChannel.presence.enter("waiting"), "alice's presence enter to be ACKed", { clients: [alice] });
      const aliceEnter = await atSam.waitFor((p) => p.action === "enter" && p.clientId === "alice", "alice's enter");
      assert.equal(aliceEnter.data, "waiting");
      assert.equal(aliceEnter.connectionId, alice.connection.id);

      // sam updates: alice sees `update` with the new data.
      await within(samChannel.presence.update({ status: "typing", agent: "Sam" }), "sam's presence update to be ACKed", {
        clients: [sam],
      });
      const samUpdate = await atAlice.waitFor((p) => p.action === "update" && p.clientId === "sam", "sam's update");
      assert.deepEqual(samUpdate.data, { status: "typing", agent: "Sam" });

      // Both see both members, with their latest data.
      const expected = [
        { clientId: "alice", data: "waiting" },
        { clientId: "sam", data: { status: "typing", agent: "Sam" } },
      ];
      assert.deepEqual(memberSummary(await within(aliceChannel.presence.get(), "alice's presence.get()", { clients: [alice] })), expected);
      assert.deepEqual(memberSummary(await within(samChannel.presence.get(), "sam's presence.get()", { clients: [sam] })), expected);

      // A late joiner (another support agent) attaches now and gets the members through SYNC.
      const sue = await realtime(stack(), { sub: "sue", roles: ["support"], protocol });
      await connected(sue);
      const sueChannel = sue.channels.get(name);
      const atSue = await presenceInbox(sue, sueChannel);
      const members = await within(sueChannel.presence.get(), "the late joiner's presence.get() (waits for SYNC)", {
        clients: [sue],
      });
      assert.deepEqual(memberSummary(members), expected, "the late joiner sees every current member");
      const samMember = members.find((m) => m.clientId === "sam");
      assert.equal(samMember.connectionId, sam.connection.id, "members keep their connectionId");
      assert.equal(sueChannel.presence.syncComplete, true, "the SYNC completed");

      // alice leaves with data: sam and the late joiner see her `leave`.
      await within(aliceChannel.presence.leave("bye"), "alice's presence leave to be ACKed", { clients: [alice] });
      for (const inbox of [atSam, atSue]) {
        const leave = await inbox.waitFor((p) => p.action === "leave" && p.clientId === "alice", "alice's leave");
        assert.equal(leave.connectionId, alice.connection.id);
      }
      assert.deepEqual(memberSummary(await within(sueChannel.presence.get(), "presence.get() after alice left", { clients: [sue] })), [
        { clientId: "sam", data: { status: "typing", agent: "Sam" } },
      ]);

      // sam's client closes without leaving: the others see sam leave.
      const samConnectionId = sam.connection.id;
      await closeClient(sam);
      for (const inbox of [atAlice, atSue]) {
        const leave = await inbox.waitFor((p) => p.action === "leave" && p.clientId === "sam", "sam's leave when his client closed");
        assert.equal(leave.connectionId, samConnectionId);
      }
      assert.deepEqual(await within(sueChannel.presence.get(), "presence.get() after sam closed", { clients: [sue] }).then(memberSummary), []);

      // What alice observed, in order, from sam: enter, update, leave (no duplicates, no strays).
      assert.deepEqual(
        atAlice.items.filter((p) => p.clientId === "sam").map((p) => p.action),
        ["enter", "update", "leave"],
      );
      await Promise.all([closeClient(alice), closeClient(sue)]);
    });

    it(`two connections of one user are two members [${protocol}]`, TEST, async () => {
      const phone = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      const laptop = await realtime(stack(), { sub: "sam", roles: ["support"], protocol, mode: "jwt" });
      const watcher = await realtime(stack(), { sub: "alice", protocol });
      await Promise.all([connected(phone), connected(laptop), connected(watcher)]);
      const name = uniqueChannel("orders:alice");
      await within(phone.channels.get(name).presence.enter("phone"), "enter from the phone", { clients: [phone] });
      await within(laptop.channels.get(name).presence.enter("laptop"), "enter from the laptop", { clients: [laptop] });

      const members = await within(watcher.channels.get(name).presence.get(), "the watcher's presence.get()", { clients: [watcher] });
      assert.deepEqual(
        members.map((m) => [m.clientId, m.connectionId, m.data]).sort((a, b) => String(a[2]).localeCompare(String(b[2]))),
        [
          ["sam", laptop.connection.id, "laptop"],
          ["sam", phone.connection.id, "phone"],
        ],
      );
      await Promise.all([closeClient(phone), closeClient(laptop), closeClient(watcher)]);
    });

    it(`entering presence without the presence capability is NACKed with 40160 [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const channel = alice.channels.get("announcements"); // subscribe only
      await within(channel.attach(), "alice's attach to announcements", { clients: [alice] });
      const error = await rejection(channel.presence.enter("here"), "alice's presence enter on announcements", { clients: [alice] });
      assert.equal(error.code, 40160, `presence refused with 40160, got ${error.code}: ${error.message}`);
      assert.equal(alice.connection.state, "connected");
      await closeClient(alice);
    });
  }
});
