// Channel params beyond rewind: `delta: "vcdiff"` sends each message as a VCDIFF delta against the
// previous one, which the real @ably/vcdiff-decoder plugin turns back into the published data
// (RTL18–RTL20, PC3); a `modes` param decides the modes over the `modes` option, is echoed as
// `channel.params`, and what it leaves out is refused with 40160.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import vcdiff from "@ably/vcdiff-decoder";

import {
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

/** The real decoder, counting the deltas it is handed. */
function countingDecoder() {
  const plugin = {
    calls: 0,
    decode(delta, base) {
      plugin.calls += 1;
      return vcdiff.decode(delta, base);
    },
  };
  return plugin;
}

describe("channel params: delta and modes", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`delta "vcdiff": messages arrive as deltas the real decoder rebuilds [${protocol}]`, TEST, async () => {
      const decoder = countingDecoder();
      const alice = await realtime(stack(), { sub: "alice", protocol, options: { plugins: { vcdiff: decoder } } });
      await connected(alice);
      const name = uniqueChannel("orders:alice");
      const channel = alice.channels.get(name, { params: { delta: "vcdiff" } });
      const inbox = await messageInbox(alice, channel);
      assert.deepEqual(channel.params, { delta: "vcdiff" }, "the param is echoed (RTL4k1)");

      const rest = restWithKey(stack(), { protocol });
      const order = { id: 42, item: "widget", notes: "leave at the door ".repeat(8) };
      const published = [
        { ...order, status: "placed" },
        { ...order, status: "packed" },
        "a string between two objects",
        { ...order, status: "shipped", eta: "tomorrow" },
        Buffer.from("binary payload, then a change to it"),
        Buffer.from("binary payload, then a change to IT!"),
      ];
      for (const [i, data] of published.entries()) {
        await within(rest.channels.get(name).publish(`m${i}`, data), `publish ${i}`);
      }
      await inbox.waitFor((m) => m.name === `m${published.length - 1}`, "the last message");
      assert.deepEqual(
        inbox.items.map((m) => m.name),
        published.map((_, i) => `m${i}`),
        "every message once, in order",
      );
      for (const [i, m] of inbox.items.entries()) {
        assert.deepEqual(m.data, published[i], `message ${i} decoded to what was published`);
      }
      // The first message since the attach has no base; every later one is a delta.
      assert.equal(decoder.calls, published.length - 1, "deltas decoded by @ably/vcdiff-decoder");
      assert.equal(channel.state, "attached", "no decode failure made the channel reattach");

      // A subscriber that did not ask for deltas needs no decoder and gets the same data.
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], protocol });
      await connected(sam);
      const samInbox = await messageInbox(sam, sam.channels.get(name));
      await within(rest.channels.get(name).publish("plain", { ...order, status: "delivered" }), "publish plain");
      await samInbox.waitFor((m) => m.name === "plain", "sam's message");
      await inbox.waitFor((m) => m.name === "plain", "alice's message");
      assert.deepEqual(inbox.items.at(-1).data, { ...order, status: "delivered" });
      assert.equal(decoder.calls, published.length, "alice's was a delta too");
      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  it("a modes param decides the modes, is echoed, and publish or enter outside it is 40160", TEST, async () => {
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await connected(sam);
    const name = uniqueChannel("orders:alice");
    // Without modes: what the capability allows of Ably's defaults.
    const plain = sam.channels.get(uniqueChannel("orders:alice"));
    await within(plain.attach(), "sam attaches without modes", { clients: [sam] });
    assert.deepEqual(
      [...plain.modes].sort(),
      ["presence", "presence_subscribe", "publish", "subscribe"],
      "no annotation_publish: sam's capability does not allow it",
    );

    // params.modes wins over the modes option (ably-js sends both).
    const channel = sam.channels.get(name, { params: { modes: "subscribe" }, modes: ["publish"] });
    const inbox = await messageInbox(sam, channel);
    assert.deepEqual(channel.modes, ["subscribe"], "the granted modes (RTL4m)");
    assert.deepEqual(channel.params, { modes: "subscribe" }, "the param is echoed (RTL4k1)");
    const published = await rejection(channel.publish("status", { step: 1 }), "publish without the PUBLISH mode");
    assert.equal(published.code, 40160, `publish: ${published.message}`);
    const entered = await rejection(channel.presence.enter("here"), "enter without the PRESENCE mode");
    assert.equal(entered.code, 40160, `enter: ${entered.message}`);
    // SUBSCRIBE was granted: it still receives.
    await within(restWithKey(stack()).channels.get(name).publish("status", { step: 2 }), "a backend publishes");
    await inbox.waitFor((m) => m.data?.step === 2, "the backend's message");
    assert.equal(sam.connection.state, "connected");
    await closeClient(sam);
  });
});
