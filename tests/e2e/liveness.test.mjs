// Presence liveness with the real client and a real network fault: `ably-tokend broker` with the
// liveness settings shortened (`[broker] presence_grace = "3s"`, `max_idle_interval = "1s"`, so
// the idle close comes 1.5 s after the last sign of life), one client watching directly and the
// client under test going through a loopback TCP proxy (tests/support/node/tcp_proxy.mjs) that can
// freeze the network (no FIN) or drop it.
//
// - frozen: the broker closes the silent connection, and the member leaves the grace after that,
//   not before, while the frozen client itself still believes it is connected; back on the
//   network, it resumes and its member enters again;
// - dropped, then resumed within the grace: the same connection id, ably-js re-enters on its own
//   (RTP17i), and the others see no leave, no enter and no update;
// - CLOSEd: the member leaves at once;
// - idle but healthy (it answers the broker's pings): never closed, in msgpack and JSON.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Ably,
  channelState,
  closeClient,
  connected,
  connectionState,
  keyClientOptions,
  presenceInbox,
  startBroker,
  stopBroker,
  uniqueChannel,
  until,
  within,
} from "./helpers.mjs";
import { Tail } from "../support/node/stack.mjs";
import { startTcpProxy } from "../support/node/tcp_proxy.mjs";

const TEST = { timeout: 45_000 };
const KEY = "e2e.live:liveness-key-secret-0123456789";
const GRACE_MS = 3_000;
const IDLE_TIMEOUT_MS = 1_500; // 1.5 × max_idle_interval
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The broker's configuration: the shortened liveness settings. */
const CONFIG = `[[ably.keys]]
key = "${KEY}"

[broker]
bind = "127.0.0.1:0"
presence_grace = "${GRACE_MS / 1000}s"
max_idle_interval = "1s"

[log]
format = "json"
level = "info"
`;

describe("presence liveness", () => {
  let broker;
  const clients = new Set();
  const proxies = new Set();
  before(async () => {
    broker = await startBroker({ config: CONFIG });
  });
  after(async () => {
    await Promise.all([...clients].map((c) => closeClient(c).catch(() => {})));
    await Promise.all([...proxies].map((p) => p.close()));
    await stopBroker(broker);
  });

  /** A realtime client as `clientId` with the key, to `port` (the broker's, or a proxy's). */
  function client(clientId, port, { protocol = "msgpack" } = {}) {
    const log = new Tail(300);
    const e2e = { label: `${clientId}/${protocol}`, log, reentered: false };
    const realtime = new Ably.Realtime(
      keyClientOptions(port, KEY, {
        clientId,
        useBinaryProtocol: protocol === "msgpack",
        // Reconnect at once after a drop, whatever ably-js's default.
        disconnectedRetryTimeout: 500,
        logLevel: 4,
        logHandler: (msg) => {
          if (msg.includes("Auto-reentering")) e2e.reentered = true;
          log.push(`${new Date().toISOString().slice(11, 23)} ${msg}`);
        },
      }),
    );
    realtime.e2e = e2e;
    clients.add(realtime);
    return realtime;
  }

  async function proxy() {
    const started = await startTcpProxy({ port: broker.port });
    proxies.add(started);
    return started;
  }

  /** Open realtime connections, from the broker's /metrics. */
  async function openConnections() {
    const text = await (await fetch(`http://127.0.0.1:${broker.port}/metrics`)).text();
    const match = text.match(/^ably_tokend_broker_connections (\d+)$/m);
    assert.ok(match, `no broker_connections gauge in:\n${text}`);
    return Number(match[1]);
  }

  /** `subject` (through `port`) enters `name` with "here", seen by a watcher connected directly. */
  async function present(subjectPort, opts) {
    const watcher = client("watcher", broker.port, opts);
    const subject = client("subject", subjectPort, opts);
    await Promise.all([connected(watcher), connected(subject)]);
    const name = uniqueChannel("room");
    const watched = watcher.channels.get(name);
    const inbox = await presenceInbox(watcher, watched);
    const channel = subject.channels.get(name);
    await within(channel.presence.enter("here"), "subject's enter to be ACKed", { clients: [subject] });
    const entered = await inbox.waitFor((p) => p.action === "enter" && p.clientId === "subject", "subject's enter");
    assert.equal(entered.connectionId, subject.connection.id);
    return { watcher, subject, watched, channel, inbox };
  }

  const fromSubject = (inbox) => inbox.items.filter((p) => p.clientId === "subject").map((p) => p.action);

  it("a frozen client (no FIN) is closed as idle, and leaves only once the grace after that is over", TEST, async () => {
    const net = await proxy();
    const { watcher, subject, watched, inbox } = await present(net.port);
    const subjectId = subject.connection.id;
    const open = await openConnections();

    const frozenAt = Date.now();
    net.freeze();
    await until(async () => (await openConnections()) === open - 1, "the broker to close the silent connection", {
      clients: [subject],
    });
    const closedAt = Date.now();
    // Silent for 1.5 × maxIdleInterval after its last pong, which came at most one ping period
    // (half an interval) before the freeze.
    assert.ok(closedAt - frozenAt >= IDLE_TIMEOUT_MS - 600, `closed ${closedAt - frozenAt} ms after the freeze`);
    assert.ok(closedAt - frozenAt <= IDLE_TIMEOUT_MS + 2_000, `closed ${closedAt - frozenAt} ms after the freeze`);

    // Within the grace: still present for the others, no leave.
    const members = await within(watched.presence.get(), "watcher's presence.get()", { clients: [watcher] });
    assert.deepEqual(
      members.map((m) => [m.clientId, m.connectionId]),
      [["subject", subjectId]],
    );
    assert.deepEqual(fromSubject(inbox), ["enter"]);

    const left = await inbox.waitFor((p) => p.action === "leave" && p.clientId === "subject", "subject's leave");
    const leftAt = Date.now();
    assert.equal(left.connectionId, subjectId);
    assert.ok(leftAt - closedAt >= GRACE_MS - 250, `left ${leftAt - closedAt} ms after the close, before the grace`);
    assert.ok(leftAt - closedAt <= GRACE_MS + 1_500, `left ${leftAt - closedAt} ms after the close`);
    // The broker noticed first: the client waits maxIdleInterval + realtimeRequestTimeout (RTN23a).
    assert.equal(subject.connection.state, "connected", "the frozen client has not noticed yet");

    // The network comes back: the client learns its socket is gone, resumes the connection the
    // broker remembers (same id) and re-enters, which after the grace is an enter again.
    net.resume();
    await connectionState(subject, "disconnected");
    await connected(subject);
    assert.equal(subject.connection.id, subjectId, "the closed connection resumed");
    const back = await inbox.waitFor(
      (p) => p.action === "enter" && p.clientId === "subject" && inbox.items.indexOf(left) < inbox.items.indexOf(p),
      "subject's enter after it came back",
    );
    assert.equal(back.connectionId, subjectId);
    assert.equal(back.data, "here");
    await Promise.all([closeClient(subject), closeClient(watcher)]);
  });

  it("a dropped client that resumes within the grace shows the others no leave, enter or update", TEST, async () => {
    const net = await proxy();
    const { watcher, subject, watched, channel, inbox } = await present(net.port);
    const subjectId = subject.connection.id;

    net.drop();
    await connectionState(subject, "disconnected");
    await connected(subject);
    assert.equal(subject.connection.id, subjectId, "the connection resumed (RTN15c6)");
    assert.equal(net.accepted, 2, "over a new TCP connection");
    await channelState(channel, "attached", { clients: [subject] });
    await until(() => subject.e2e.reentered, "ably-js to re-enter its member (RTP17i)", { clients: [subject] });

    await sleep(GRACE_MS + 1_000);
    assert.deepEqual(fromSubject(inbox), ["enter"], "no leave, no second enter, no update");
    for (const [who, realtime, ch] of [
      ["watcher", watcher, watched],
      ["subject", subject, channel],
    ]) {
      const members = await within(ch.presence.get(), `${who}'s presence.get()`, { clients: [realtime] });
      assert.deepEqual(
        members.map((m) => [m.clientId, m.connectionId, m.data]),
        [["subject", subjectId, "here"]],
        `${who} sees the member once, on its connection`,
      );
    }
    await closeClient(subject);
    await inbox.waitFor((p) => p.action === "leave" && p.clientId === "subject", "subject's leave on close");
    await closeClient(watcher);
  });

  it("a client that closes leaves at once", TEST, async () => {
    const { watcher, subject, inbox } = await present(broker.port);
    const closing = Date.now();
    await closeClient(subject);
    await inbox.waitFor((p) => p.action === "leave" && p.clientId === "subject", "subject's leave", GRACE_MS - 1_000);
    assert.ok(Date.now() - closing < GRACE_MS - 1_000);
    await closeClient(watcher);
  });

  for (const protocol of ["msgpack", "json"]) {
    it(`a client idle for longer than the grace but answering pings is never closed [${protocol}]`, TEST, async () => {
      const net = await proxy();
      const { watcher, subject, inbox } = await present(net.port, { protocol });
      const subjectId = subject.connection.id;
      const open = await openConnections();
      const changes = [];
      subject.connection.on((change) => changes.push(change.current));

      await sleep(4 * IDLE_TIMEOUT_MS + GRACE_MS);
      assert.deepEqual(changes, [], "the connection never changed state");
      assert.equal(subject.connection.id, subjectId);
      assert.equal(net.accepted, 1, "one TCP connection throughout");
      assert.equal(await openConnections(), open);
      assert.deepEqual(fromSubject(inbox), ["enter"]);
      await Promise.all([closeClient(subject), closeClient(watcher)]);
    });
  }
});
