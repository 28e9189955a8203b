// What the broker does not do, as the real client sees it — each claim in README.md's "What it does
// not do" is one test here: comet/long polling is not served, push admin and annotations answer 40400 over REST, a realtime annotation
// publish is NACKed, and LiveObjects' channel modes are never granted.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { LiveObjects } from "ably/liveobjects";

import {
  Ably,
  channelState,
  connected,
  connectionState,
  messageInbox,
  realtime,
  rejection,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

describe("what the broker does not do", () => {
  const stack = useStack();

  it("comet: transports ['comet'] fails the connection with 40400 naming WebSocket; Node's ably-js has no xhr_polling", TEST, async () => {
    const bob = await realtime(stack(), { sub: "bob", options: { transports: ["comet"] } });
    const change = await connectionState(bob, "failed");
    assert.equal(change.reason.code, 40400, change.reason.message);
    assert.match(change.reason.message, /GET \/comet\/connect: the broker serves realtime over WebSocket only/);

    assert.throws(
      () => new Ably.Realtime({ key: stack().apiKey, endpoint: "127.0.0.1", port: stack().broker.port, tls: false, transports: ["xhr_polling"], autoConnect: false }),
      /no requested transports available/,
    );
  });

  it("push: push.admin calls answer 40400", TEST, async () => {
    const rest = restWithKey(stack());
    const publish = await rejection(
      rest.push.admin.publish({ clientId: "alice" }, { notification: { title: "Shipped" } }),
      "push.admin.publish",
      { clients: [rest] },
    );
    assert.equal(publish.code, 40400);
    assert.equal(publish.statusCode, 404);
    assert.match(publish.message, /POST \/push\/publish: the broker does not implement push notifications/);
    const list = await rejection(rest.push.admin.deviceRegistrations.list({}), "deviceRegistrations.list", { clients: [rest] });
    assert.equal(list.code, 40400);
    assert.match(list.message, /does not implement push notifications/);
  });

  it("annotations: a REST annotation publish answers 40400, a realtime one is NACKed 40000 and the connection stays up", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    const rest = restWithKey(stack());
    const annotation = { type: "reaction:distinct.v1", name: "👍" };
    const overRest = await rejection(rest.channels.get(name).annotations.publish("serial-1", annotation), "REST annotation publish", {
      clients: [rest],
    });
    assert.equal(overRest.code, 40400);
    assert.match(overRest.message, /does not implement message annotations/);

    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await connected(sam);
    const channel = sam.channels.get(name);
    await within(channel.attach(), "sam's attach", { clients: [sam] });
    const overRealtime = await rejection(channel.annotations.publish("serial-1", annotation), "realtime annotation publish", {
      clients: [sam],
    });
    assert.equal(overRealtime.code, 40000, overRealtime.message);
    assert.match(overRealtime.message, /protocol action 21, ANNOTATION .* is not supported by this broker/);
    assert.equal(sam.connection.state, "connected");
    assert.equal(channel.state, "attached");
    await within(channel.publish("after", "still works"), "a publish after the NACK", { clients: [sam] });
  });

  it("LiveObjects: object modes are never granted, so channel.object.get() fails with 40024", TEST, async () => {
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"], options: { plugins: { LiveObjects } } });
    await connected(sam);
    const channel = sam.channels.get(uniqueChannel("orders:alice"), { modes: ["subscribe", "object_subscribe", "object_publish"] });
    await within(channel.attach(), "an attach asking for object modes", { clients: [sam] });
    await channelState(channel, "attached", { clients: [sam] });
    assert.deepEqual(channel.modes, ["subscribe"], "the object modes were cut");
    const error = await rejection(channel.object.get(), "channel.object.get()", { clients: [sam] });
    assert.equal(error.code, 40024, error.message);
    assert.match(error.message, /object_subscribe/);
  });
});
