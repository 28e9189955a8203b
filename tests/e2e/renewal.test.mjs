// A token mid-session: the broker asks the client to re-authenticate 30 s before it expires (AUTH,
// RTN22), the client goes back to its authUrl (the sidecar, behind a counting proxy here) for a new
// token and hands it over in band, and the connection never drops — in TokenRequest mode and in JWT
// mode. A token with 30 s or less to live is not asked (as Ably does not: ably-js's own suite
// expects a 5 s token to end in a 40142 disconnection): the client is disconnected with 40142 at
// expiry, renews then, and resumes its connection.

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

// Long enough to be asked to renew (30 s before expiry): the AUTH comes 2 s after connecting.
const TTL_MS = 32_000;
// Too short to be asked: the connection is disconnected at expiry.
const SHORT_TTL_MS = 5000;
const TEST = { timeout: 90_000 };

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
    it(`a ${TTL_MS / 1000}s ${mode === "token" ? "TokenRequest" : "JWT"} is renewed in band before it expires (AUTH from the broker), without a disconnection`, TEST, async () => {
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
      assert.equal(proxy.hits.length - hitsBefore, 1, "one trip to the authUrl to connect");
      assert.equal(proxy.hits.at(-1).query.ttl, String(TTL_MS), "ably-js passed authParams to the authUrl");
      const firstToken = alice.auth.tokenDetails.token;
      // A JWT's TokenDetails has no `expires` in ably-js; it was issued just now for TTL_MS.
      const firstExpires = alice.auth.tokenDetails.expires ?? Date.now() + TTL_MS;
      if (mode === "token") {
        const { issued, expires } = alice.auth.tokenDetails;
        assert.ok(expires - issued <= TTL_MS, `the broker honoured the TokenRequest's ttl: ${expires - issued} ms`);
      }

      const name = uniqueChannel("orders:alice");
      const channel = alice.channels.get(name);
      const inbox = await messageInbox(alice, channel);
      await within(sam.channels.get(name).publish("update", "before expiry"), "publish before expiry", { clients: [sam] });
      await inbox.waitFor((m) => m.data === "before expiry", "the message before expiry");

      // The broker sends AUTH 30 s before the token expires (RTN22); ably-js fetches a new token
      // from its authUrl and sends it in an AUTH of its own (RTC8a).
      await until(() => alice.auth.tokenDetails && alice.auth.tokenDetails.token !== firstToken, "alice to hold a renewed token", {
        ms: 10_000,
        clients: [alice],
      });
      assert.ok(Date.now() < firstExpires - 20_000, "renewed well before the first token expired");
      assert.equal(proxy.hits.length - hitsBefore, 2, "the authUrl was asked once more");
      if (mode === "token") {
        // Well past the first token's expiry, the connection is still the same and still up: the
        // broker holds the connection to the new token's expiry. (Once is enough: it takes the
        // token's whole life.)
        await until(() => Date.now() > firstExpires + 1500, "the first token's expiry to pass", { ms: TTL_MS + 5000 });
      }
      // ably-js reports each in-band renewal as a connected → connected update (emitted once the
      // broker's CONNECTED answers the client's AUTH, a moment after the new token is held), and
      // nothing else.
      await until(() => transitions.length >= 2, "the renewal's connected update", { clients: [alice] });
      assert.equal(alice.connection.state, "connected");
      assert.equal(alice.connection.id, firstConnectionId, "the same connection throughout");
      assert.deepEqual(
        transitions.filter((t) => t.state !== "connected"),
        [],
        "never disconnected (40142), suspended or failed",
      );
      assert.equal(alice.auth.clientId, "alice");

      await within(sam.channels.get(name).publish("update", "after renewal"), "publish after renewal", { clients: [sam] });
      await inbox.waitFor((m) => m.data === "after renewal", "the message published after the renewal");
      assert.deepEqual(inbox.items.map((m) => m.data), ["before expiry", "after renewal"], "each message delivered once");

      await Promise.all([closeClient(alice), closeClient(sam)]);
    });
  }

  it("a token too short to be asked to renew (30 s or less) is DISCONNECTED 40142 at expiry, renewed then, and the connection resumed", TEST, async () => {
    // A proxy of its own, so that no other test's requests count against alice's.
    const own = await authProxy(stack);
    after(() => own.close());
    const alice = await realtime(stack, { sub: "alice", authUrl: own.url("token"), authParams: { ttl: String(SHORT_TTL_MS) } });
    const sam = await realtime(stack, { sub: "sam", roles: ["support"] });
    const transitions = [];
    alice.connection.on((change) =>
      transitions.push({ state: change.current, code: change.reason?.code, at: Date.now(), authUrlHits: own.hits.length }),
    );
    await Promise.all([connected(alice), connected(sam)]);
    const firstConnectionId = alice.connection.id;
    const firstToken = alice.auth.tokenDetails.token;
    const name = uniqueChannel("orders:alice");
    const channel = alice.channels.get(name);
    const inbox = await messageInbox(alice, channel);
    assert.equal(own.hits.length, 1, "one trip to the authUrl to connect");

    await until(
      () => transitions.some((t) => t.state === "disconnected" && t.code === 40142),
      "alice to be DISCONNECTED with 40142 (token expired)",
      { ms: SHORT_TTL_MS + 8000, clients: [alice] },
    );
    const expiredAt = transitions.findIndex((t) => t.state === "disconnected" && t.code === 40142);
    // No AUTH came first: no in-band renewal (a connected → connected update), and the authUrl
    // was not asked again until the expiry.
    const beforeExpiry = transitions.slice(0, expiredAt);
    assert.ok(
      beforeExpiry.every((t) => t.state === "connecting" || t.state === "connected") &&
        beforeExpiry.filter((t) => t.state === "connected").length === 1,
      `connected once and nothing else before the expiry: ${JSON.stringify(transitions)}`,
    );
    assert.equal(transitions[expiredAt].authUrlHits, 1, "no trip to the authUrl before the expiry");
    await until(
      () => transitions.slice(expiredAt + 1).some((t) => t.state === "connected") && alice.connection.state === "connected",
      "alice to reconnect after the expiry",
      { clients: [alice] },
    );
    assert.notEqual(alice.auth.tokenDetails.token, firstToken, "the client holds a new token");
    assert.ok(
      !transitions.some((t) => t.state === "failed" || t.state === "suspended"),
      `no failed or suspended state on the way: ${JSON.stringify(transitions)}`,
    );
    // Expected of a resume (`resume=` with the connection key): the same connection.
    assert.equal(alice.connection.id, firstConnectionId, "the reconnection resumed the same connection");
    await channelState(channel, "attached", { clients: [alice] });
    await within(sam.channels.get(name).publish("update", "after renewal"), "publish after renewal", { clients: [sam] });
    await inbox.waitFor((m) => m.data === "after renewal", "the message published after the renewal");
    await Promise.all([closeClient(alice), closeClient(sam)]);
  });

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
