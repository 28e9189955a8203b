// Connecting: ably-js gets its credentials from the sidecar's authUrl (a TokenRequest it exchanges at
// the broker, or an Ably JWT it presents directly), in both wire formats, and the broker gives the
// connection the token's clientId. A session the sidecar refuses keeps the client off the broker
// the way ably-js documents: 401 → disconnected (it will retry), 403 → failed.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  closeClient,
  connected,
  connectionState,
  fixture,
  protocols,
  realtime,
  startStack,
  stopStack,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

function jwtClaims(token) {
  const parts = token.split(".");
  assert.equal(parts.length, 3, `an Ably JWT has three parts: ${token}`);
  return JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
}

describe("connect through the sidecar's authUrl", () => {
  const stack = useStack();

  for (const protocol of protocols) {
    it(`TokenRequest mode (/api/ably-token), ${protocol}: connected as the session's user`, TEST, async () => {
      const alice = await realtime(stack(), { sub: "alice", mode: "token", protocol });
      await connected(alice);

      assert.equal(alice.connection.state, "connected");
      assert.equal(alice.auth.clientId, "alice", "the connection's clientId is the session's sub");
      assert.ok(alice.connection.id, "CONNECTED carries a connectionId");
      assert.ok(alice.connection.key, "CONNECTED carries a connectionKey");

      const details = alice.auth.tokenDetails;
      assert.ok(details?.token, "the TokenRequest was exchanged for a token");
      assert.equal(details.clientId, "alice", "the broker's TokenDetails carry the clientId");
      assert.equal(details.keyName, stack().keyName);
      assert.ok(details.expires > details.issued, `expires ${details.expires} > issued ${details.issued}`);
      const capability = JSON.parse(details.capability);
      assert.deepEqual(capability["orders:alice:*"], ["history", "presence", "subscribe"]);
      assert.deepEqual(capability.announcements, ["subscribe"]);
      assert.equal(capability["orders:*"], undefined, "a customer gets no support grant");

      await closeClient(alice);
      assert.equal(alice.connection.state, "closed");
    });

    it(`JWT mode (/api/ably-jwt), ${protocol}: connected as the session's user`, TEST, async () => {
      const sam = await realtime(stack(), { sub: "sam", roles: ["support"], mode: "jwt", protocol });
      await connected(sam);

      assert.equal(sam.connection.state, "connected");
      assert.equal(sam.auth.clientId, "sam", "the connection's clientId is the JWT's x-ably-clientId");
      assert.ok(sam.connection.id, "CONNECTED carries a connectionId");

      const claims = jwtClaims(sam.auth.tokenDetails.token);
      assert.equal(claims["x-ably-clientId"], "sam");
      const capability = JSON.parse(claims["x-ably-capability"]);
      assert.deepEqual(capability["orders:*"], ["history", "presence", "publish", "subscribe"]);
      assert.ok(claims.exp - claims.iat <= 15 * 60, "the support role caps the ttl at 15 minutes");

      await closeClient(sam);
      assert.equal(sam.connection.state, "closed");
    });
  }

  it("two clients get distinct connection ids", TEST, async () => {
    const a = await realtime(stack(), { sub: "alice" });
    const b = await realtime(stack(), { sub: "alice", mode: "jwt" });
    await Promise.all([connected(a), connected(b)]);
    assert.notEqual(a.connection.id, b.connection.id);
    assert.equal(a.auth.clientId, "alice");
    assert.equal(b.auth.clientId, "alice");
    await Promise.all([closeClient(a), closeClient(b)]);
  });

  it("an invalid session: the sidecar answers 401, the client stays disconnected and will retry", TEST, async () => {
    const client = await realtime(stack(), { sub: "mallory", session: "not.a.jwt" });
    const change = await connectionState(client, "disconnected");
    assert.equal(client.connection.state, "disconnected");
    assert.equal(change.reason?.code, 80019, "ably-js wraps an authUrl failure as 80019");
    assert.equal(change.reason?.cause?.code, 40100, "the sidecar's Ably-shaped 401 is the cause");
    assert.equal(client.auth.tokenDetails ?? null, null, "no token was obtained");
    await closeClient(client);
  });
});

describe("a session the policy refuses (403)", () => {
  const stack = useStack({ policy: fixture("staff-only.toml") });

  it("fails the connection with the sidecar's 40300 as the cause", TEST, async () => {
    const client = await realtime(stack(), { sub: "alice" });
    const change = await connectionState(client, "failed");
    assert.equal(client.connection.state, "failed");
    assert.equal(change.reason?.code, 80019);
    assert.equal(change.reason?.statusCode, 403);
    assert.equal(change.reason?.cause?.code, 40300);
  });

  it("a user with the policy's role connects under the custom policy", TEST, async () => {
    const client = await realtime(stack(), { sub: "stella", roles: ["staff"] });
    await connected(client);
    assert.equal(client.auth.clientId, "stella");
    assert.deepEqual(JSON.parse(client.auth.tokenDetails.capability), {
      "staff:*": ["history", "presence", "publish", "subscribe"],
    });
    await closeClient(client);
  });
});

describe("shutdown", () => {
  it("SIGTERM stops the dev stack promptly even with a client connected, and the client sees it", TEST, async () => {
    const stack = await startStack();
    const alice = await realtime(stack, { sub: "alice" });
    await connected(alice);
    const states = [];
    alice.connection.on((change) => states.push(change.current));

    const started = Date.now();
    stack.proc.kill("SIGTERM");
    const exit = await within(stack.exitPromise, "ably-tokend to exit after SIGTERM", { clients: [alice] });
    assert.deepEqual(exit, { code: 0, signal: null }, "a clean exit on SIGTERM");
    assert.ok(Date.now() - started < 10_000, `exited in ${Date.now() - started} ms`);

    await connectionState(alice, "disconnected");
    assert.equal(alice.connection.state, "disconnected", `the client noticed: ${states}`);
    alice.close();
    await stopStack(stack); // already exited: only forgets it
  });
});
