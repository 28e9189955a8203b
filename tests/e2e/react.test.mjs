// ably-js's React hooks (`ably/react`, https://ably.com/docs/getting-started/react-hooks) under jsdom:
// components rendered with @testing-library/react inside `AblyProvider` + `ChannelProvider`, each
// with a Realtime client that authenticates through the sidecar, asserted on the rendered DOM.
// `useChannel` renders a message another client published; `usePresence` enters and
// `usePresenceListener` lists both members in each user's page.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { JSDOM } from "jsdom";

import { connected, realtime, uniqueChannel, useStack, WAIT_MS, within } from "./helpers.mjs";

// A browser-like global scope for react-dom and Testing Library, set before either is loaded.
// Only DOM names are copied: the ably client keeps Node's own timers, http and WebSocket.
const dom = new JSDOM("<!doctype html><html><body></body></html>", { url: "http://localhost/" });
for (const name of ["window", "document", "navigator", "HTMLElement", "Element", "Node", "Text", "MutationObserver", "getComputedStyle"]) {
  if (!(name in globalThis) || name === "window" || name === "document") {
    Object.defineProperty(globalThis, name, { value: name === "window" ? dom.window : dom.window[name], configurable: true, writable: true });
  }
}
globalThis.IS_REACT_ACT_ENVIRONMENT = true;

const React = (await import("react")).default;
const { render, screen, waitFor, cleanup } = await import("@testing-library/react");
const { AblyProvider, ChannelProvider, useChannel, usePresence, usePresenceListener } = await import("ably/react");

const h = React.createElement;
const TEST = { timeout: 30_000 };

/** `children` inside the providers the hooks need, for `client` and `channelName`. */
function withAbly(client, channelName, children) {
  return h(AblyProvider, { client }, h(ChannelProvider, { channelName }, children));
}

/** Renders every message the channel delivers as a list item `name: data`. */
function Feed({ channelName, testId }) {
  const [messages, setMessages] = React.useState([]);
  useChannel(channelName, (message) => setMessages((seen) => [...seen, message]));
  return h(
    "ul",
    { "data-testid": testId },
    messages.map((m) => h("li", { key: m.id }, `${m.name}: ${m.data} (from ${m.clientId})`)),
  );
}

/** Enters presence with `status` and renders the members the listener sees, sorted. */
function Room({ channelName, status, testId }) {
  usePresence(channelName, { status });
  const { presenceData } = usePresenceListener(channelName);
  const members = [...presenceData].sort((a, b) => a.clientId.localeCompare(b.clientId));
  return h(
    "ul",
    { "data-testid": testId },
    members.map((m) => h("li", { key: m.clientId }, `${m.clientId} is ${m.data?.status}`)),
  );
}

/** Wait, bounded, until `assertion` stops throwing (Testing Library wraps this in act()). */
const eventually = (assertion) => waitFor(assertion, { timeout: WAIT_MS, interval: 25 });

describe("ably/react hooks under jsdom", () => {
  const stack = useStack();

  it("useChannel renders a message another client published", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam)]);
    const channelName = uniqueChannel("orders:alice");

    try {
      render(withAbly(alice, channelName, h(Feed, { channelName, testId: "feed" })));
      await eventually(() => assert.equal(alice.channels.get(channelName).state, "attached"));
      await within(sam.channels.get(channelName).publish("status", "shipped"), "sam's publish", { clients: [sam] });

      await eventually(() => assert.equal(screen.getByTestId("feed").textContent, "status: shipped (from sam)"));
      assert.equal(screen.getByTestId("feed").querySelectorAll("li").length, 1);
    } finally {
      cleanup();
    }
  });

  it("usePresence enters and usePresenceListener shows both members on each user's page", TEST, async () => {
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam)]);
    const channelName = uniqueChannel("orders:alice");

    try {
      render(withAbly(alice, channelName, h(Room, { channelName, status: "waiting", testId: "alice-page" })));
      render(withAbly(sam, channelName, h(Room, { channelName, status: "helping", testId: "sam-page" })));

      const both = ["alice is waiting", "sam is helping"];
      const items = (testId) => [...screen.getByTestId(testId).querySelectorAll("li")].map((li) => li.textContent);
      await eventually(() => assert.deepEqual(items("alice-page"), both));
      await eventually(() => assert.deepEqual(items("sam-page"), both));
      const members = await alice.channels.get(channelName).presence.get();
      assert.deepEqual(members.map((m) => m.clientId).sort(), ["alice", "sam"], "the broker's presence set agrees");

      // Unmounting leaves presence (usePresence's cleanup). The hook does not await that leave, so
      // await a second one: ACKs come in msgSerial order (RTN7a), so once it resolves the hook's did
      // too, and closing the clients afterwards leaves no leave pending.
      cleanup();
      await eventually(() => assert.equal(screen.queryByTestId("alice-page"), null));
      for (const client of [alice, sam]) {
        await within(client.channels.get(channelName).presence.leave(), `${client.e2e.label}'s leave after unmount`, {
          clients: [client],
        });
      }
      await eventually(async () =>
        assert.deepEqual(await sam.channels.get(channelName).presence.get(), [], "both left when their pages unmounted"),
      );
    } finally {
      cleanup();
    }
  });
});
