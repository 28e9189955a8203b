// Channel names and `::` capabilities with the real client, under the shipped Spaces board policy
// (policies/spaces-board.toml): a space `<name>` uses `<name>::$space` and `<name>::$cursors`, as
// @ably/spaces names them. An editor enters a board and moves a cursor, a viewer sees both and may
// do neither; names Ably refuses (https://ably.com/docs/channels) reach ably-js as 40010 with
// status 400, over realtime and REST.

import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

import {
  channelState,
  closeClient,
  connected,
  messageInbox,
  presenceInbox,
  protocols,
  realtime,
  rejection,
  restWithKey,
  uniqueChannel,
  useStack,
  within,
} from "./helpers.mjs";

const TEST = { timeout: 30_000 };
const here = path.dirname(fileURLToPath(import.meta.url));
const policy = path.join(here, "..", "..", "policies", "spaces-board.toml");

describe("Spaces channel names under policies/spaces-board.toml", () => {
  const stack = useStack({ policy });

  for (const protocol of protocols) {
    it(`an editor enters board:…::$space and publishes on ::$cursors; a viewer sees both [${protocol}]`, TEST, async () => {
      const editor = await realtime(stack(), { sub: "erin", roles: ["editor"], protocol, mode: "jwt" });
      const viewer = await realtime(stack(), { sub: "vic", protocol });
      await Promise.all([connected(editor), connected(viewer)]);
      const space = uniqueChannel("board");
      const [spaceName, cursorsName] = [`${space}::$space`, `${space}::$cursors`];

      const members = await presenceInbox(viewer, viewer.channels.get(spaceName));
      const cursors = await messageInbox(viewer, viewer.channels.get(cursorsName));
      assert.equal(viewer.channels.get(spaceName).state, "attached");

      await within(editor.channels.get(spaceName).presence.enter({ name: "Erin" }), "erin entering the space", {
        clients: [editor],
      });
      await within(editor.channels.get(cursorsName).publish("cursorUpdate", { x: 1, y: 2 }), "erin's cursor publish", {
        clients: [editor],
      });
      const entered = await members.waitFor((p) => p.action === "enter" && p.clientId === "erin", "erin's enter at vic");
      assert.deepEqual(entered.data, { name: "Erin" });
      const cursor = await cursors.waitFor((m) => m.name === "cursorUpdate", "erin's cursor at vic");
      assert.deepEqual(cursor.data, { x: 1, y: 2 });
      assert.equal(cursor.clientId, "erin");

      // The viewer's grant on board spaces is subscribe and history only.
      const refused = await rejection(viewer.channels.get(cursorsName).publish("cursorUpdate", {}), "vic's cursor publish", {
        clients: [viewer],
      });
      assert.equal(refused.code, 40160, `${refused.code}: ${refused.message}`);
      const noEnter = await rejection(viewer.channels.get(spaceName).presence.enter(), "vic entering the space", {
        clients: [viewer],
      });
      assert.equal(noEnter.code, 40160, `${noEnter.code}: ${noEnter.message}`);
      await Promise.all([closeClient(editor), closeClient(viewer)]);
    });
  }

  it("{clientId}::* is the user's own scratch space and nobody else's", TEST, async () => {
    const vic = await realtime(stack(), { sub: "vic" });
    await connected(vic);
    const own = vic.channels.get("vic::$space");
    await within(own.presence.enter(), "vic entering his scratch space", { clients: [vic] });
    const other = vic.channels.get("erin::$space");
    const error = await rejection(other.attach(), "vic attaching erin::$space", { clients: [vic] });
    assert.equal(error.code, 40160, `${error.code}: ${error.message}`);
    await closeClient(vic);
  });

  const invalid = [":board", "[meta]log", "board\nx", "board\u2028x"];

  it("an attach to a name Ably refuses fails the channel with 40010, status 400", TEST, async () => {
    const vic = await realtime(stack(), { sub: "vic" });
    await connected(vic);
    for (const name of invalid) {
      const channel = vic.channels.get(name);
      const error = await rejection(channel.attach(), `attach ${JSON.stringify(name)}`, { clients: [vic] });
      assert.equal(error.code, 40010, `${JSON.stringify(name)}: ${error.code} ${error.message}`);
      assert.equal(error.statusCode, 400);
      assert.match(error.message, /invalid channel name/);
      await channelState(channel, "failed", { clients: [vic] });
    }
    // The connection is still usable.
    await within(vic.channels.get("vic::$cursors").attach(), "attach vic::$cursors", { clients: [vic] });
    assert.equal(vic.connection.state, "connected");
    await closeClient(vic);
  });

  for (const protocol of protocols) {
    it(`a REST publish to a name Ably refuses gets 40010; ::, private:a:b and unicode are accepted [${protocol}]`, TEST, async () => {
      const rest = restWithKey(stack(), { protocol });
      for (const name of invalid) {
        const error = await rejection(rest.channels.get(name).publish("n", "x"), `REST publish to ${JSON.stringify(name)}`, {
          clients: [rest],
        });
        assert.equal(error.code, 40010, `${JSON.stringify(name)}: ${error.code} ${error.message}`);
        assert.equal(error.statusCode, 400);
      }
      for (const name of [`${uniqueChannel("board")}::$space`, uniqueChannel("private:a:b"), uniqueChannel("café:😀 Ω")]) {
        const channel = rest.channels.get(name);
        await within(channel.publish("n", "kept"), `REST publish to ${name}`, { clients: [rest] });
        const page = await within(channel.history(), `REST history of ${name}`, { clients: [rest] });
        assert.deepEqual(
          page.items.map((m) => m.data),
          ["kept"],
          `history of ${name}`,
        );
      }
    });
  }
});
