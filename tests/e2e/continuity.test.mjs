// Continuity (RTN15 resume, RTN16 recover, RTL4c1, RTL10b): what a client misses while its
// transport is down — messages and presence events — arrives after it resumes, in order, once,
// with `resumed: true`; a recovery key carries that across Node processes; an unknown recovery
// key gets 80018 and a fresh connection; `history({ untilAttach: true })` ends at the attach.
//
// A transport is dropped as attach-options.test.mjs does (`disconnectAllTransports()`); while it
// is down the client's reconnect is held back (its `connectImpl`) so that the publishing below
// happens, deterministically, while it is away.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { describe, it } from "node:test";

import {
  authUrlFor,
  closeClient,
  connected,
  connectionState,
  fixture,
  memberSummary,
  messageInbox,
  mintSession,
  presenceInbox,
  protocols,
  realtime,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 40_000 };

/**
 * Drops the client's transport and keeps it from reconnecting until the returned function is
 * called; resolves once the connection is `disconnected`.
 */
async function dropTransport(client) {
  const manager = client.connection.connectionManager;
  const connectImpl = manager.connectImpl;
  let release;
  const held = new Promise((resolve) => {
    release = resolve;
  });
  manager.connectImpl = function (...args) {
    held.then(() => connectImpl.apply(this, args));
  };
  manager.disconnectAllTransports();
  await connectionState(client, "disconnected");
  return () => {
    manager.connectImpl = connectImpl;
    release();
  };
}

/** Resolves with the channel's next `attached` state change (after a reattach). */
function nextAttached(channel) {
  return new Promise((resolve) => channel.once("attached", resolve));
}

describe("continuity: resume, recover, untilAttach", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`messages published while the transport is down arrive after the resume, in order, once [${protocol}]`, TEST, async () => {
      const rest = restWithKey(stack(), { protocol });
      const name = uniqueChannel("orders:alice");
      const alice = await realtime(stack(), { sub: "alice", protocol });
      await connected(alice);
      const channel = alice.channels.get(name);
      const inbox = await messageInbox(alice, channel);
      const updates = [];
      channel.on("update", (change) => updates.push(change));
      await within(rest.channels.get(name).publish("status", { step: 0 }), "publish 0");
      await inbox.waitFor((m) => m.data?.step === 0, "the message before the drop");
      const connectionId = alice.connection.id;

      const reconnect = await dropTransport(alice);
      for (const step of [1, 2, 3]) {
        await within(rest.channels.get(name).publish("status", { step }), `publish ${step} while away`);
      }
      const reattached = nextAttached(channel);
      reconnect();
      await connected(alice, 20_000);
      const change = await within(reattached, "the channel to reattach", { clients: [alice] });
      assert.equal(alice.connection.id, connectionId, "the same connection (RTN15c6)");
      assert.equal(alice.connection.errorReason, null);
      assert.equal(change.resumed, true, "continuity kept (RTL2f)");
      await inbox.waitForAll([1, 2, 3].map((step) => (m) => m.data?.step === step), "the missed messages");
      await within(rest.channels.get(name).publish("status", { step: 4 }), "publish 4");
      await inbox.waitFor((m) => m.data?.step === 4, "the live message");
      await sleep(300);
      assert.deepEqual(
        inbox.items.map((m) => m.data.step),
        [0, 1, 2, 3, 4],
        "every message once, in publish order",
      );
      assert.deepEqual(updates, [], "no update with resumed: false");
      await closeClient(alice);
    });
  }

  it("presence events missed while the transport is down are seen after the resume", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    const alice = await realtime(stack(), { sub: "alice" });
    const sam = await realtime(stack(), { sub: "sam", roles: ["support"] });
    const kim = await realtime(stack(), { sub: "kim", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam), connected(kim)]);
    const channel = alice.channels.get(name);
    const inbox = await presenceInbox(alice, channel);
    await within(kim.channels.get(name).presence.enter("on shift"), "kim enters", { clients: [kim] });
    await inbox.waitFor((p) => p.clientId === "kim" && p.action === "enter", "kim's enter");

    const reconnect = await dropTransport(alice);
    const samPresence = sam.channels.get(name).presence;
    await within(samPresence.enter("hello"), "sam enters", { clients: [sam] });
    await within(samPresence.update("busy"), "sam updates", { clients: [sam] });
    await within(kim.channels.get(name).presence.leave(), "kim leaves", { clients: [kim] });
    const reattached = nextAttached(channel);
    reconnect();
    await connected(alice, 20_000);
    assert.equal((await within(reattached, "the channel to reattach", { clients: [alice] })).resumed, true);
    await inbox.waitForAll(
      [
        (p) => p.clientId === "sam" && p.action === "enter" && p.data === "hello",
        (p) => p.clientId === "sam" && p.action === "update" && p.data === "busy",
        (p) => p.clientId === "kim" && p.action === "leave",
      ],
      "the presence events missed",
    );
    const sams = inbox.items.filter((p) => p.clientId === "sam").map((p) => p.action);
    assert.deepEqual(sams, ["enter", "update"], "in order, once each");
    const members = await within(channel.presence.get(), "presence.get()", { clients: [alice] });
    assert.deepEqual(memberSummary(members), [{ clientId: "sam", data: "busy" }]);
    await Promise.all([closeClient(alice), closeClient(sam), closeClient(kim)]);
  });

  it("recover in a new Node process gets what was published after the first one exited", TEST, async () => {
    const name = uniqueChannel("orders:alice");
    const rest = restWithKey(stack());
    await within(rest.channels.get(name).publish("status", { step: 0 }), "publish 0");
    // The first "page": a child process that attaches, prints its recovery key and exits.
    const session = await mintSession(stack(), "alice");
    const childOptions = {
      endpoint: stack().broker.host,
      port: stack().broker.port,
      tls: false,
      fallbackHosts: [],
      disableConnectivityCheck: true,
      wsConnectivityCheckUrl: `ws://${stack().broker.host}:${stack().broker.port}/`,
      authUrl: authUrlFor(stack()),
      authHeaders: { Authorization: `Bearer ${session}` },
    };
    const child = spawn(process.execPath, [fixture("recover-child.mjs"), JSON.stringify({ options: childOptions, channel: name })], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    const [code] = await within(once(child, "exit"), "the child process to exit");
    assert.equal(code, 0, `the child failed: ${stderr}`);
    const { connectionId, recoveryKey } = JSON.parse(stdout.trim());
    const key = JSON.parse(recoveryKey);
    assert.ok(key.channelSerials[name], `the recovery key holds the channel's serial: ${recoveryKey}`);

    for (const step of [1, 2]) {
      await within(rest.channels.get(name).publish("status", { step }), `publish ${step} after the exit`);
    }
    // The second "page": a new client recovering from the key.
    const second = await realtime(stack(), { sub: "alice", session, options: { recover: recoveryKey } });
    const change = await connected(second);
    assert.equal(second.connection.id, connectionId, "the recovered connection's id (RTN16d)");
    assert.equal(change?.reason ?? null, null, "no error on a recovered connection");
    const channel = second.channels.get(name);
    const attached = nextAttached(channel);
    const inbox = await messageInbox(second, channel);
    assert.equal((await within(attached, "the recovered channel to attach")).resumed, true);
    await inbox.waitForAll([1, 2].map((step) => (m) => m.data?.step === step), "the messages published after the exit");
    await within(rest.channels.get(name).publish("status", { step: 3 }), "publish 3");
    await inbox.waitFor((m) => m.data?.step === 3, "the live message");
    assert.deepEqual(inbox.items.map((m) => m.data.step), [1, 2, 3], "only what the first process missed, in order");
    await closeClient(second);
  });

  it("an unknown recovery key gets a fresh connection with 80018", TEST, async () => {
    const recover = JSON.stringify({ connectionKey: "unknown-key", msgSerial: 5, channelSerials: {} });
    const alice = await realtime(stack(), { sub: "alice", options: { recover } });
    const change = await connected(alice);
    assert.equal(change.reason?.code, 80018, "the connected state change's reason");
    assert.equal(change.reason?.statusCode, 400);
    assert.equal(alice.connection.errorReason?.code, 80018, "connection.errorReason");
    assert.match(alice.connection.errorReason.message, /unable to recover/);
    assert.ok(alice.connection.id, "a new connection id");
    // The fresh connection works.
    const name = uniqueChannel("orders:alice");
    const inbox = await messageInbox(alice, alice.channels.get(name));
    await within(restWithKey(stack()).channels.get(name).publish("status", { step: 1 }), "publish");
    await inbox.waitFor((m) => m.data?.step === 1, "a message on the fresh connection");
    await closeClient(alice);
  });

  it("history({ untilAttach: true }) returns only what was published before the attach", TEST, async () => {
    const rest = restWithKey(stack());
    const name = uniqueChannel("orders:alice");
    for (const step of [1, 2]) await within(rest.channels.get(name).publish("status", { step }), `publish ${step}`);
    const alice = await realtime(stack(), { sub: "alice" });
    await connected(alice);
    const channel = alice.channels.get(name);
    const inbox = await messageInbox(alice, channel);
    await within(rest.channels.get(name).publish("status", { step: 3 }), "publish 3");
    await inbox.waitFor((m) => m.data?.step === 3, "the live message");
    const all = await within(channel.history(), "history()", { clients: [alice] });
    assert.deepEqual(all.items.map((m) => m.data.step), [3, 2, 1]);
    const before = await within(channel.history({ untilAttach: true }), "history({ untilAttach })", { clients: [alice] });
    assert.deepEqual(before.items.map((m) => m.data.step), [2, 1], "up to the attach point (RTL10b)");
    const paged = await within(channel.history({ untilAttach: true, limit: 1 }), "a page of one", { clients: [alice] });
    assert.deepEqual(paged.items.map((m) => m.data.step), [2]);
    const next = await within(paged.next(), "the next page", { clients: [alice] });
    assert.deepEqual(next.items.map((m) => m.data.step), [1], "the bound holds across pages");
    await closeClient(alice);
  });
});
