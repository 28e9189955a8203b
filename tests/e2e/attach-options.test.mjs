// Channel options on attach: `params: { rewind }` (count and time) delivers the channel's recent
// messages right after ATTACHED, in order and before live ones, with `hasBacklog` set and the
// param echoed as `channel.params`; `modes` are intersected with the capability, echoed as
// `channel.modes`, and decide what the client is sent.

import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";

import {
  channelState,
  closeClient,
  connected,
  connectionState,
  messageInbox,
  presenceInbox,
  protocols,
  realtime,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

/** Subscribes with `options` and records the ATTACHED state change alongside the messages. */
async function attachWith(client, name, options) {
  const channel = client.channels.get(name, options);
  const attachedChange = new Promise((resolve) => channel.once("attached", resolve));
  const inbox = await messageInbox(client, channel);
  const change = await within(attachedChange, `${name} attached`, { clients: [client] });
  return { channel, inbox, change };
}

describe("attach params and modes", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`rewind "3" delivers the last three messages in order, then live ones [${protocol}]`, TEST, async () => {
      const rest = restWithKey(stack(), { protocol });
      const name = uniqueChannel("orders:alice");
      for (const step of [1, 2, 3, 4, 5]) {
        await within(rest.channels.get(name).publish("status", { step }), `publish ${step}`);
      }
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const { channel, inbox, change } = await attachWith(alice, name, { params: { rewind: "3" } });
      assert.equal(change.hasBacklog, true, "ATTACHED says a backlog follows");
      assert.deepEqual(channel.params, { rewind: "3" }, "the param is echoed (RTL4k1)");
      await inbox.waitForAll([3, 4, 5].map((step) => (m) => m.data?.step === step), "the rewound messages");
      await within(rest.channels.get(name).publish("status", { step: 6 }), "publish 6");
      await inbox.waitFor((m) => m.data?.step === 6, "the live message");
      assert.deepEqual(
        inbox.items.map((m) => m.data.step),
        [3, 4, 5, 6],
        "the backlog in order, before the live message, nothing twice",
      );
      for (const m of inbox.items) assert.ok(m.id && m.timestamp > 0, "rewound messages keep id and timestamp");

      // A dropped transport: the client resumes and reattaches; rewind applies to the first attach only.
      alice.connection.connectionManager.disconnectAllTransports();
      await connectionState(alice, "disconnected");
      await connected(alice, 20_000);
      await channelState(channel, "attached", { clients: [alice] });
      await within(rest.channels.get(name).publish("status", { step: 7 }), "publish 7");
      await inbox.waitFor((m) => m.data?.step === 7, "the message after the resume");
      await sleep(500);
      assert.deepEqual(inbox.items.map((m) => m.data.step), [3, 4, 5, 6, 7], "no backlog again after the resume");

      // Without rewind a new subscriber gets only what comes next.
      const plain = await attachWith(alice, uniqueChannel("orders:alice"), {});
      assert.equal(plain.change.hasBacklog, false);
      assert.deepEqual(plain.channel.params, {});
      await closeClient(alice);
    });
  }

  it(`rewind by time ("2s", "1m") reaches back that far and no further`, TEST, async () => {
    const rest = restWithKey(stack());
    const name = uniqueChannel("orders:alice");
    const channel = rest.channels.get(name);
    await within(channel.publish("status", { step: 1 }), "publish 1");
    await within(channel.publish("status", { step: 2 }), "publish 2");
    await sleep(3_000);
    await within(channel.publish("status", { step: 3 }), "publish 3");
    await within(channel.publish("status", { step: 4 }), "publish 4");
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);

    const recent = await attachWith(alice, name, { params: { rewind: "2s" } });
    assert.equal(recent.change.hasBacklog, true);
    await recent.inbox.waitForAll([3, 4].map((step) => (m) => m.data?.step === step), "the last 2 s");
    const bob = await realtime(stack(), { sub: "alice" });
    await connected(bob);
    const all = await attachWith(bob, name, { params: { rewind: "1m" } });
    await all.inbox.waitForAll([1, 2, 3, 4].map((step) => (m) => m.data?.step === step), "the last minute");
    assert.deepEqual(all.inbox.items.map((m) => m.data.step), [1, 2, 3, 4]);
    assert.deepEqual(recent.inbox.items.map((m) => m.data.step), [3, 4], "nothing older than 2 s");
    await Promise.all([closeClient(alice), closeClient(bob)]);
  });

  it("a bad rewind fails the attach with 40000", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const channel = alice.channels.get(uniqueChannel("orders:alice"), { params: { rewind: "yesterday" } });
    const error = await within(
      channel.attach().then(
        () => null,
        (err) => err,
      ),
      "the attach to fail",
      { clients: [alice] },
    );
    assert.ok(error, "the attach must fail");
    assert.equal(error.code, 40000);
    assert.equal(error.statusCode, 400);
    assert.match(error.message, /invalid rewind "yesterday"/);
    assert.equal(channel.state, "failed");
    assert.equal(alice.connection.state, "connected", "only the channel fails");
    await closeClient(alice);
  });

  it("modes ['PUBLISH'] echo as channel.modes; such a client publishes but is sent nothing", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam)]);
    const aliceChannel = alice.channels.get(name);
    const aliceMessages = await messageInbox(alice, aliceChannel);
    assert.deepEqual(
      [...aliceChannel.modes].sort(),
      ["presence", "presence_subscribe", "subscribe"],
      "no modes asked: what alice's capability allows",
    );

    const samChannel = sam.channels.get(name, { modes: ["PUBLISH"] });
    const samMessages = [];
    const samPresence = [];
    await within(samChannel.attach(), "sam to attach", { clients: [sam] });
    assert.deepEqual(samChannel.modes, ["publish"], "the granted modes (RTL4m)");
    samChannel.subscribe((m) => samMessages.push(m));
    samChannel.presence.subscribe((p) => samPresence.push(p));

    // Asking for more than the capability allows: alice may not publish.
    const alice2 = alice.channels.get(uniqueChannel("orders:alice"), { modes: ["PUBLISH", "SUBSCRIBE"] });
    await within(alice2.attach(), "alice to attach asking for publish", { clients: [alice] });
    assert.deepEqual(alice2.modes, ["subscribe"], "requested ∩ capability");

    await within(samChannel.publish("status", { step: 1 }), "sam publishes with PUBLISH mode", { clients: [sam] });
    await within(
      restWithKey(stack()).channels.get(name).publish("status", { step: 2 }),
      "a backend publishes",
    );
    const alicePresence = await presenceInbox(alice, aliceChannel);
    await within(aliceChannel.presence.enter("here"), "alice enters", { clients: [alice] });
    await alicePresence.waitFor((p) => p.clientId === "alice", "alice's own presence");
    await aliceMessages.waitForAll([1, 2].map((step) => (m) => m.data?.step === step), "both messages reach alice");
    await sleep(500);
    assert.deepEqual(samMessages, [], "no SUBSCRIBE mode: no messages");
    assert.deepEqual(samPresence, [], "no PRESENCE_SUBSCRIBE mode: no presence events");
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });
});
