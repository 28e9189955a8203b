// `ably-tokend broker --sandbox`: the local-sandbox contract ably-js's own test suite provisions its
// apps through (ably-js test/common/modules/testapp_manager.js with ABLY_LOCAL_SANDBOX_URL). An app
// created with POST /apps is reached as that suite reaches it, at the endpoint and port the answer
// names, with a key it lists: the real client publishes, receives, reads history and sees the
// fixture's presence members; after DELETE /apps/{appId} the app no longer answers.

import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";

import {
  Ably,
  closeClient,
  connected,
  connectionState,
  messageInbox,
  rejection,
  startBroker,
  stopBroker,
  uniqueChannel,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };

/** The parts of ably-common's test-app-setup.json `post_apps` these tests read. */
const POST_APPS = {
  limits: { presence: { maxMembers: 250 } },
  keys: [{}, { capability: '{ "channel0":["publish"], "channel3":["subscribe"] }' }],
  namespaces: [{ id: "persisted", persisted: true }],
  channels: [
    {
      name: "persisted:presence_fixtures",
      presence: [
        { clientId: "client_string", data: "This is a string clientData payload" },
        { clientId: "client_decoded", data: '{"example":{"json":"Object"}}', encoding: "json" },
      ],
    },
  ],
};

/** `ably-tokend broker --sandbox` on a free loopback port; resolves with startBroker's answer and its `url`. */
async function startSandbox() {
  const args = ["--sandbox", "--bind", "127.0.0.1:0", "--log-format", "json"];
  const sandbox = await startBroker({ args, name: "sandbox" });
  return { ...sandbox, url: `http://127.0.0.1:${sandbox.port}` };
}

/** POST /apps as testapp_manager.js does; resolves with the parsed answer. */
async function createApp(sandbox) {
  const response = await within(
    fetch(`${sandbox.url}/apps`, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json" },
      body: JSON.stringify(POST_APPS),
    }),
    "POST /apps",
  );
  assert.equal(response.status, 201, await response.clone().text());
  return response.json();
}

function deleteApp(sandbox, app, keyStr = app.keys[0].keyStr) {
  return within(
    fetch(`${sandbox.url}/apps/${app.appId}`, {
      method: "DELETE",
      headers: { Authorization: `Basic ${Buffer.from(keyStr).toString("base64")}` },
    }),
    "DELETE /apps/{appId}",
  );
}

/** Client options as ably-js's client_module.js builds them for a local-sandbox app. */
function options(app, key = app.keys[0].keyStr, more = {}) {
  return {
    key,
    endpoint: app.endpoint,
    port: app.port,
    tlsPort: app.port,
    tls: app.tls,
    fallbackHosts: [],
    disableConnectivityCheck: true,
    wsConnectivityCheckUrl: `ws://${app.endpoint}:${app.port}/`,
    ...more,
  };
}

describe("broker --sandbox", () => {
  let sandbox;
  before(async () => {
    sandbox = await startSandbox();
  });
  after(async () => {
    await stopBroker(sandbox);
  });

  it("an app from POST /apps: a client with its key publishes, receives, reads history and sees the fixture's members", TEST, async () => {
    const app = await createApp(sandbox);
    assert.equal(app.keys.length, POST_APPS.keys.length);
    assert.equal(app.namespaces.length, POST_APPS.namespaces.length);
    assert.equal(app.tls, false);
    const realtime = new Ably.Realtime(options(app));
    const restricted = new Ably.Rest(options(app, app.keys[1].keyStr));
    try {
      await connected(realtime);
      const name = uniqueChannel("sandbox");
      const channel = realtime.channels.get(name);
      const inbox = await messageInbox(realtime, channel);
      await within(channel.publish("greeting", { hello: "sandbox" }), "a realtime publish");
      const received = await inbox.waitFor((m) => m.name === "greeting", "the published message");
      assert.equal(received.name, "greeting");
      assert.deepEqual(received.data, { hello: "sandbox" });

      const page = await within(channel.history(), "channel.history()");
      assert.deepEqual(
        page.items.map((m) => [m.name, m.data]),
        [["greeting", { hello: "sandbox" }]],
      );

      // The fixture's members were entered when the app was made, data decoded as the client reads it.
      const fixtures = realtime.channels.get("persisted:presence_fixtures");
      const members = await within(fixtures.presence.get(), "presence.get() on the fixture channel");
      const byClient = Object.fromEntries(members.map((m) => [m.clientId, m.data]));
      assert.deepEqual(byClient, {
        client_string: "This is a string clientData payload",
        client_decoded: { example: { json: "Object" } },
      });

      // The second key holds the capability it was created with.
      await within(restricted.channels.get("channel0").publish("n", "allowed"), "a publish to channel0 with the restricted key");
      const refused = await rejection(restricted.channels.get("channel3").publish("n", "no"), "a publish to channel3 with the restricted key");
      assert.equal(refused.code, 40160, refused.message);
    } finally {
      await closeClient(realtime);
      await deleteApp(sandbox, app);
    }
    assert.ok(!sandbox.text().includes(app.keys[0].keySecret), "the app's key secret never appears in the sandbox's log");
  });

  it("DELETE /apps/{appId} with the first key stops the app: its clients are disconnected and it answers no more", TEST, async () => {
    const app = await createApp(sandbox);
    const realtime = new Ably.Realtime(options(app, app.keys[0].keyStr, { disconnectedRetryTimeout: 60_000 }));
    try {
      await connected(realtime);
      const wrongKey = await deleteApp(sandbox, app, app.keys[1].keyStr);
      assert.equal(wrongKey.status, 401);
      assert.equal((await wrongKey.json()).error.code, 40101);
      assert.equal(realtime.connection.state, "connected", "a refused DELETE leaves the app running");

      const deleted = await deleteApp(sandbox, app);
      assert.equal(deleted.status, 204);
      await connectionState(realtime, "disconnected");
      const rest = new Ably.Rest(options(app, app.keys[0].keyStr, { httpMaxRetryCount: 0 }));
      const gone = await rejection(rest.time(), "time() from a deleted app");
      assert.match(`${gone.code} ${gone.message}`, /ECONNREFUSED/, "nothing listens on the app's port any more");
      const again = await deleteApp(sandbox, app);
      assert.equal(again.status, 404);
    } finally {
      await closeClient(realtime);
    }
  });
});
