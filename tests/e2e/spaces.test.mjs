// The Spaces SDK (@ably/spaces, https://ably.com/docs/spaces) with two editors through the sidecar,
// under the shipped board policy (policies/spaces-board.toml). A space `<name>` is carried on
// `<name>::$space` (members, locations and locks, all as presence data and extras) and
// `<name>::$cursors` (cursor batches published as `cursorUpdate`, read back by `cursors.getAll()`
// from the channel's presence set and history). Everything below goes through the SDK's own API.

import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import spacesModule from "@ably/spaces";

import { connected, protocols, realtime, uniqueChannel, until, useStack, within } from "./helpers.mjs";

// The package's `main` is CommonJS with `exports.default`, which Node's ESM import wraps once more.
const Spaces = spacesModule.default;
const TEST = { timeout: 30_000 };
const here = path.dirname(fileURLToPath(import.meta.url));
const policy = path.join(here, "..", "..", "policies", "spaces-board.toml");

/** Two editors, each with a Spaces client, both holding the same space. */
async function twoEditors(stack, protocol) {
  const alice = await realtime(stack, { sub: "alice", roles: ["editor"], protocol });
  const bob = await realtime(stack, { sub: "bob", roles: ["editor"], protocol });
  await Promise.all([connected(alice), connected(bob)]);
  const name = uniqueChannel("board");
  const clients = [alice, bob];
  const aliceSpace = await within(new Spaces(alice).get(name), "alice's space", { clients });
  const bobSpace = await within(new Spaces(bob).get(name), "bob's space", { clients });
  return { alice, bob, clients, name, aliceSpace, bobSpace };
}

/** Everything a Spaces emitter emitted for `event`, for bounded waits with `until`. */
function record(emitter, event) {
  const seen = [];
  emitter.subscribe(event, (item) => seen.push(item));
  return seen;
}

describe("@ably/spaces through the sidecar under policies/spaces-board.toml", () => {
  const stack = useStack({ policy });

  for (const protocol of protocols) {
    it(`members: alice enters with profile data and bob sees her, and she sees both [${protocol}]`, TEST, async () => {
      const { clients, aliceSpace, bobSpace } = await twoEditors(stack(), protocol);
      const entered = record(bobSpace.members, "enter");

      await within(bobSpace.enter({ name: "Bob", colour: "blue" }), "bob entering", { clients });
      const members = await within(aliceSpace.enter({ name: "Alice", colour: "red" }), "alice entering", { clients });
      assert.ok(members.some((m) => m.clientId === "alice"), "enter() resolves with the members, alice among them");

      const alice = await until(() => entered.find((m) => m.clientId === "alice"), "bob's members to see alice enter", {
        clients,
      });
      assert.deepEqual(alice.profileData, { name: "Alice", colour: "red" });
      assert.equal(alice.isConnected, true);
      assert.equal(alice.connectionId, clients[0].connection.id);

      const all = await until(
        async () => {
          const list = await aliceSpace.members.getAll();
          return list.length === 2 ? list : null;
        },
        "alice's members.getAll() to list both",
        { clients },
      );
      assert.deepEqual(
        all.map((m) => [m.clientId, m.profileData.name]).sort(),
        [
          ["alice", "Alice"],
          ["bob", "Bob"],
        ],
      );
      const self = await aliceSpace.members.getSelf();
      assert.equal(self.clientId, "alice");

      await within(aliceSpace.updateProfileData({ name: "Alice L.", colour: "red" }), "alice's profile update", { clients });
      const updated = await until(
        async () => (await bobSpace.members.getAll()).find((m) => m.clientId === "alice" && m.profileData.name === "Alice L."),
        "bob to see alice's new profile data",
        { clients },
      );
      assert.equal(updated.profileData.colour, "red");
    });
  }

  it("locations: alice sets hers and bob's subscription sees the change", TEST, async () => {
    const { clients, aliceSpace, bobSpace } = await twoEditors(stack());
    const updates = record(bobSpace.locations, "update");
    await within(bobSpace.enter({ name: "Bob" }), "bob entering", { clients });
    await within(aliceSpace.enter({ name: "Alice" }), "alice entering", { clients });

    await within(aliceSpace.locations.set({ slide: 2, element: "title" }), "alice setting her location", { clients });
    const update = await until(() => updates.find((u) => u.member.clientId === "alice"), "bob to see alice's location", {
      clients,
    });
    assert.deepEqual(update.currentLocation, { slide: 2, element: "title" });
    assert.equal(update.previousLocation, null);

    await within(aliceSpace.locations.set({ slide: 3 }), "alice moving on", { clients });
    const moved = await until(
      () => updates.find((u) => u.member.clientId === "alice" && u.currentLocation?.slide === 3),
      "bob to see alice move to slide 3",
      { clients },
    );
    assert.deepEqual(moved.previousLocation, { slide: 2, element: "title" });
    const all = await bobSpace.locations.getAll();
    assert.deepEqual(all[clients[0].connection.id], { slide: 3 });
  });

  it("cursors: bob's subscription sees alice's positions, and cursors.getAll() reads the last one back", TEST, async () => {
    const { alice, bob, clients, aliceSpace, bobSpace } = await twoEditors(stack());
    await within(bobSpace.enter({ name: "Bob" }), "bob entering", { clients });
    await within(aliceSpace.enter({ name: "Alice" }), "alice entering", { clients });
    const positions = [];
    bobSpace.cursors.subscribe("update", (update) => positions.push(update));

    // The SDK sends nothing until its presence set on `::$cursors` shows a second member, so keep
    // moving until bob sees a position (each set is one batched `cursorUpdate` publish).
    let x = 0;
    await until(
      async () => {
        x += 1;
        await aliceSpace.cursors.set({ position: { x, y: 10 }, data: { colour: "red" } });
        return positions.length > 0;
      },
      "bob to see one of alice's cursor positions",
      { clients },
    );
    const seen = positions[0];
    assert.equal(seen.clientId, "alice");
    assert.equal(seen.connectionId, alice.connection.id);
    assert.equal(seen.position.y, 10);
    assert.deepEqual(seen.data, { colour: "red" });

    await aliceSpace.cursors.set({ position: { x: 500, y: 600 }, data: { colour: "red" } });
    await until(() => positions.some((p) => p.position.x === 500), "bob to see the last position", { clients });

    // getAll(): the `::$cursors` presence set and the last `cursorUpdate` per connection from history.
    const all = await until(
      async () => {
        const got = await bobSpace.cursors.getAll();
        return got[alice.connection.id]?.position?.x === 500 ? got : null;
      },
      "bob's cursors.getAll() to hold alice's last position",
      { clients },
    );
    assert.deepEqual(all[alice.connection.id], {
      clientId: "alice",
      connectionId: alice.connection.id,
      position: { x: 500, y: 600 },
      data: { colour: "red" },
    });
    assert.ok(bob.connection.id in all, "bob is a member of the cursors channel too (no position yet)");
    assert.equal(all[bob.connection.id], null);
  });

  it("locks: alice acquires a lock and bob sees it locked by her; a release unlocks it", TEST, async () => {
    const { alice, clients, aliceSpace, bobSpace } = await twoEditors(stack());
    await within(bobSpace.enter({ name: "Bob" }), "bob entering", { clients });
    await within(aliceSpace.enter({ name: "Alice" }), "alice entering", { clients });
    const updates = record(bobSpace.locks, "update");

    const pending = await within(aliceSpace.locks.acquire("slide-1", { attributes: { field: "title" } }), "alice's acquire", {
      clients,
    });
    assert.equal(pending.status, "pending");

    const locked = await until(
      () => updates.find((l) => l.id === "slide-1" && l.status === "locked"),
      "bob to see slide-1 locked",
      { clients },
    );
    assert.equal(locked.member.clientId, "alice");
    assert.equal(locked.member.connectionId, alice.connection.id);
    assert.deepEqual(locked.attributes, { field: "title" });
    assert.equal(bobSpace.locks.get("slide-1")?.member.clientId, "alice");
    await until(() => aliceSpace.locks.get("slide-1")?.status === "locked", "alice to see her own lock locked", { clients });

    // Bob asking for the same lock is refused by the SDK's own rule (the earlier request wins).
    await within(bobSpace.locks.acquire("slide-1"), "bob's competing acquire", { clients });
    await until(
      () => updates.find((l) => l.id === "slide-1" && l.member.clientId === "bob" && l.status === "unlocked"),
      "bob's own competing request to be unlocked",
      { clients },
    );
    assert.equal(bobSpace.locks.get("slide-1")?.member.clientId, "alice", "the lock is still alice's");

    await within(aliceSpace.locks.release("slide-1"), "alice's release", { clients });
    await until(() => bobSpace.locks.get("slide-1") === undefined, "bob to see slide-1 released", { clients });
  });
});
