// Publish and subscribe across two users whose grants come from the default policy: `alice` (every
// user's `customer` role: subscribe/presence/history on orders:alice:*, subscribe on announcements)
// and `sam` (role `support`: subscribe/publish/presence/history on orders:*). Run in msgpack (the
// Node client's default) and JSON, and with the two clients on different formats. What the broker
// refuses must reach the client as Ably error 40160.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  channelState,
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

describe("publish and subscribe", () => {
  const stack = useStack();

  const pairs = [
    ...protocols.map((p) => ({ alice: p, sam: p, title: p })),
    { alice: "msgpack", sam: "json", title: "alice msgpack, sam json" },
    { alice: "json", sam: "msgpack", title: "alice json, sam msgpack" },
  ];

  for (const pair of pairs) {
    it(`sam (support) publishes to orders:alice:…, alice (customer) receives it [${pair.title}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol: pair.alice });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol: pair.sam, mode: "jwt" });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");

      const aliceChannel = alice.channels.get(name);
      const inbox = await messageInbox(alice, aliceChannel);
      assert.equal(aliceChannel.state, "attached");
      const modes = aliceChannel.modes ?? [];
      assert.ok(modes.includes("subscribe"), `alice's ATTACHED allows subscribe: ${modes}`);
      assert.ok(!modes.includes("publish"), `alice's ATTACHED does not allow publish: ${modes}`);

      // sam publishes without attaching, as a backend-ish agent console would.
      const samChannel = sam.channels.get(name);
      const binary = Buffer.from([0, 1, 2, 250, 255]);
      await within(samChannel.publish("status", "shipped"), "sam's publish (string) to be ACKed", { clients: [sam] });
      await within(samChannel.publish("details", { carrier: "DHL", eta: 3, tags: ["a", "b"] }), "sam's publish (object) to be ACKed", {
        clients: [sam],
      });
      await within(samChannel.publish("label", binary), "sam's publish (binary) to be ACKed", { clients: [sam] });

      const [status, details, label] = await inbox.waitForAll(
        [(m) => m.name === "status", (m) => m.name === "details", (m) => m.name === "label"],
        "the three messages from sam",
      );
      assert.equal(status.data, "shipped");
      assert.equal(status.clientId, "sam", "a message carries its publisher's clientId");
      assert.equal(status.connectionId, sam.connection.id, "a message carries its publisher's connectionId");
      assert.ok(status.id, "a delivered message has an id");
      assert.ok(typeof status.timestamp === "number" && status.timestamp > 0, "a delivered message has a timestamp");
      assert.deepEqual(details.data, { carrier: "DHL", eta: 3, tags: ["a", "b"] });
      assert.equal(details.clientId, "sam");
      assert.ok(Buffer.isBuffer(label.data) || label.data instanceof Uint8Array, `binary stays binary: ${typeof label.data}`);
      assert.deepEqual([...label.data], [...binary]);
      assert.deepEqual(
        inbox.items.map((m) => m.name),
        ["status", "details", "label"],
        "messages arrive once each, in publish order",
      );

      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  for (const protocol of protocols) {
    it(`a subscribed publisher receives its own message (echo) [${protocol}]`, TEST, async () => {
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await connected(sam);
      const channel = sam.channels.get(uniqueChannel("orders:alice"));
      const inbox = await messageInbox(sam, channel);
      await within(channel.publish("note", "hello from sam"), "sam's publish to be ACKed", { clients: [sam] });
      const echoed = await inbox.waitFor((m) => m.name === "note", "sam's own message");
      assert.equal(echoed.data, "hello from sam");
      assert.equal(echoed.clientId, "sam");
      await closeClient(sam);
    });

    it(`with echoMessages: false the publisher is not sent its own message [${protocol}]`, TEST, async () => {
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol, options: { echoMessages: false } });
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await Promise.all([connected(sam), connected(alice)]);
      const name = uniqueChannel("orders:alice");
      const samInbox = await messageInbox(sam, sam.channels.get(name));
      const aliceInbox = await messageInbox(alice, alice.channels.get(name));
      await within(sam.channels.get(name).publish("first", "1"), "publish first", { clients: [sam] });
      await within(sam.channels.get(name).publish("second", "2"), "publish second", { clients: [sam] });
      await aliceInbox.waitForAll([(m) => m.name === "first", (m) => m.name === "second"], "both messages at alice");
      assert.deepEqual(samInbox.items.map((m) => m.name), [], "sam (echo=false) received none of his own messages");
      await Promise.all([closeClient(sam), closeClient(alice)]);
    });

    it(`alice attaching orders:bob:… is refused with 40160 and the channel fails [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const channel = alice.channels.get("orders:bob:status");
      const error = await rejection(channel.attach(), "alice's attach to orders:bob:status", { clients: [alice] });
      assert.equal(error.code, 40160, `attach refused with 40160, got ${error.code}: ${error.message}`);
      await channelState(channel, "failed", { clients: [alice] });
      assert.equal(channel.state, "failed");
      assert.equal(channel.errorReason?.code, 40160);
      assert.equal(channel.errorReason?.statusCode, 401);
      assert.equal(alice.connection.state, "connected", "a refused attach leaves the connection up");

      // The connection is still usable for what she may do.
      const own = alice.channels.get(uniqueChannel("orders:alice"));
      await within(own.attach(), "alice's attach to her own orders channel", { clients: [alice] });
      assert.equal(own.state, "attached");
      await closeClient(alice);
    });

    it(`alice publishing to orders:alice:status (subscribe-only for her) is NACKed with 40160 [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await Promise.all([connected(alice), connected(sam)]);
      const name = uniqueChannel("orders:alice");
      const samInbox = await messageInbox(sam, sam.channels.get(name));

      const channel = alice.channels.get(name);
      await within(channel.attach(), "alice's attach", { clients: [alice] });
      const error = await rejection(channel.publish("status", "cancelled"), "alice's publish", { clients: [alice] });
      assert.equal(error.code, 40160, `publish refused with 40160, got ${error.code}: ${error.message}`);
      assert.equal(alice.connection.state, "connected", "a refused publish leaves the connection up");
      assert.equal(channel.state, "attached", "a refused publish leaves the channel attached");

      // Nothing of hers was delivered: a later message from sam arrives alone.
      await within(sam.channels.get(name).publish("status", "confirmed"), "sam's publish", { clients: [sam] });
      await samInbox.waitFor((m) => m.data === "confirmed", "sam's own message");
      assert.deepEqual(samInbox.items.map((m) => m.data), ["confirmed"], "alice's refused message was never delivered");

      // A later publish of hers is refused again, with the msgSerial sequence intact.
      const again = await rejection(channel.publish("status", "cancelled again"), "alice's second publish", { clients: [alice] });
      assert.equal(again.code, 40160);
      await Promise.all([closeClient(alice), closeClient(sam)]);
    });

    it(`alice may subscribe to announcements but not publish there [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const channel = alice.channels.get("announcements");
      await within(channel.attach(), "alice's attach to announcements", { clients: [alice] });
      assert.equal(channel.state, "attached");
      const error = await rejection(channel.publish("spam", "x"), "alice's publish to announcements", { clients: [alice] });
      assert.equal(error.code, 40160);
      await closeClient(alice);
    });

    it(`a detached channel receives nothing more [${protocol}]`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", protocol });
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await Promise.all([connected(alice), connected(sam)]);
      const left = uniqueChannel("orders:alice");
      const kept = uniqueChannel("orders:alice");
      const leftInbox = await messageInbox(alice, alice.channels.get(left));
      const keptInbox = await messageInbox(alice, alice.channels.get(kept));

      await within(sam.channels.get(left).publish("before", "1"), "publish before detach", { clients: [sam] });
      await leftInbox.waitFor((m) => m.name === "before", "the message before detaching");

      await within(alice.channels.get(left).detach(), "alice's detach", { clients: [alice] });
      assert.equal(alice.channels.get(left).state, "detached");

      await within(sam.channels.get(left).publish("after", "2"), "publish after detach", { clients: [sam] });
      await within(sam.channels.get(kept).publish("marker", "3"), "publish marker", { clients: [sam] });
      await keptInbox.waitFor((m) => m.name === "marker", "the marker on the channel still attached");
      assert.deepEqual(leftInbox.items.map((m) => m.name), ["before"], "nothing delivered after DETACHED");
      assert.ok(
        !alice.e2e.log.text().includes(`skipped as this channel "${left}"`),
        "the broker sent no MESSAGE for the detached channel (ably-js would have dropped it silently)",
      );
      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }
});
