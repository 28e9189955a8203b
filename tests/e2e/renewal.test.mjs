// A short-lived token that expires mid-session: the broker disconnects the client with 40142, the
// client goes back to its authUrl (the sidecar, behind a counting proxy here) for a new token,
// reconnects, and its subscription keeps receiving what is published after the renewal.
// In TokenRequest mode and in JWT mode.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  authProxy,
  channelState,
  closeClient,
  connected,
  messageInbox,
  realtime,
  startStack,
  stopStack,
  uniqueChannel,
  until,
  within,
} from "./helpers.mjs";

const TTL_MS = 5000;
const TEST = { timeout: 60_000 };

describe("token renewal through the authUrl", () => {
  let stack;
  let proxy;
  before(async () => {
    stack = await startStack();
    proxy = await authProxy(stack);
  });
  after(async () => {
    await proxy?.close();
    await stopStack(stack);
  });

  for (const mode of ["token", "jwt"]) {
    it(`a ${TTL_MS / 1000}s ${mode === "token" ? "TokenRequest" : "JWT"} expires mid-session, is renewed, and the subscription keeps receiving`, TEST, async () => {
      const hitsBefore = proxy.hits.length;
      const alice = await realtime(stack, {
        sub: "alice",
        mode,
        authUrl: proxy.url(mode),
        authParams: { ttl: String(TTL_MS) },
      });
      const sam = await realtime(stack, { sub: "sam", roles: ["support"] });
      const transitions = [];
      alice.connection.on((change) => transitions.push({ state: change.current, code: change.reason?.code, at: Date.now() }));

      await Promise.all([connected(alice), connected(sam)]);
      const firstConnectionId = alice.connection.id;
      const hitsAtConnect = proxy.hits.length - hitsBefore;
      assert.equal(hitsAtConnect, 1, "one trip to the authUrl to connect");
      assert.equal(proxy.hits.at(-1).query.ttl, String(TTL_MS), "ably-js passed authParams to the authUrl");
      const firstToken = alice.auth.tokenDetails.token;
      if (mode === "token") {
        const { issued, expires } = alice.auth.tokenDetails;
        assert.ok(expires - issued <= TTL_MS, `the broker honoured the TokenRequest's ttl: ${expires - issued} ms`);
      }

      const name = uniqueChannel("orders:alice");
      const channel = alice.channels.get(name);
      const inbox = await messageInbox(alice, channel);
      await within(sam.channels.get(name).publish("update", "before expiry"), "publish before expiry", { clients: [sam] });
      await inbox.waitFor((m) => m.data === "before expiry", "the message before expiry");

      // The broker disconnects alice with 40142 when the token expires...
      await until(
        () => transitions.some((t) => t.state === "disconnected" && t.code === 40142),
        "alice to be DISCONNECTED with 40142 (token expired)",
        { ms: TTL_MS + 8000, clients: [alice] },
      );
      // ...and she renews through the authUrl and reconnects.
      const expiredAt = transitions.findIndex((t) => t.state === "disconnected" && t.code === 40142);
      await until(
        () => transitions.slice(expiredAt + 1).some((t) => t.state === "connected") && alice.connection.state === "connected",
        "alice to reconnect after the expiry",
        { clients: [alice] },
      );
      assert.ok(proxy.hits.length - hitsBefore >= 2, `the authUrl was hit again: ${proxy.hits.length - hitsBefore} hits`);
      assert.notEqual(alice.auth.tokenDetails.token, firstToken, "the client holds a new token");
      assert.equal(alice.auth.clientId, "alice");
      assert.ok(
        !transitions.some((t) => t.state === "failed" || t.state === "suspended"),
        `no failed or suspended state on the way: ${JSON.stringify(transitions)}`,
      );

      // The same subscription receives what is published after the renewal.
      await channelState(channel, "attached", { clients: [alice] });
      await within(sam.channels.get(name).publish("update", "after renewal"), "publish after renewal", { clients: [sam] });
      await inbox.waitFor((m) => m.data === "after renewal", "the message published after the renewal");
      assert.deepEqual(
        inbox.items.map((m) => m.data),
        ["before expiry", "after renewal"],
        "each message delivered once",
      );

      // Expected of a resume (`resume=` with the connection key): the same connection.
      assert.equal(alice.connection.id, firstConnectionId, "the reconnection resumed the same connection");

      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  it("client.auth.authorize() re-authenticates in band (AUTH) without dropping the connection", TEST, async () => {
    const alice = await realtime(stack, { sub: "alice", authUrl: proxy.url("token") });
    const sam = await realtime(stack, { sub: "sam", roles: ["support"] });
    await Promise.all([connected(alice), connected(sam)]);
    const states = [];
    alice.connection.on((change) => states.push(change.current));
    const connectionId = alice.connection.id;
    const firstToken = alice.auth.tokenDetails.token;
    const hits = proxy.hits.length;

    const name = uniqueChannel("orders:alice");
    const inbox = await messageInbox(alice, alice.channels.get(name));
    const details = await within(alice.auth.authorize(), "alice's authorize()", { clients: [alice] });

    assert.equal(proxy.hits.length, hits + 1, "authorize() fetched a token from the authUrl");
    assert.notEqual(details.token, firstToken);
    assert.equal(alice.connection.state, "connected");
    assert.equal(alice.connection.id, connectionId, "the same connection carries on");
    assert.ok(!states.includes("disconnected"), `no disconnection: ${states}`);

    await within(sam.channels.get(name).publish("update", "after AUTH"), "publish after AUTH", { clients: [sam] });
    await inbox.waitFor((m) => m.data === "after AUTH", "the message published after in-band re-auth");
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });
});
