// A real @auth/core Auth() handler on loopback, with database sessions (the
// opaque-session case a `session_endpoint` issuer is for) kept in memory by a
// minimal adapter. Prints one JSON line on stdout once it listens:
//   {"port": N, "cookie": {"name": "authjs.session-token", "value": "<opaque token>"}}
// POST /test/revoke deletes that session (signing out elsewhere). Used by
// src/upstream/session_endpoint.rs's tests; ends when stdin closes.
import http from "node:http";
import { randomBytes } from "node:crypto";
import { Auth } from "@auth/core";

const users = new Map();
const sessions = new Map();
const user = { id: "user-1", name: "Ada", email: "ada@example.com", emailVerified: null, image: null, role: "support" };
users.set(user.id, user);
const sessionToken = randomBytes(32).toString("hex");
sessions.set(sessionToken, {
  sessionToken,
  userId: user.id,
  expires: new Date(Date.now() + 30 * 86400 * 1000),
});

const copy = (value) => (value ? { ...value } : null);
/** The adapter methods Auth.js requires for database sessions. */
const adapter = {
  async createUser(data) { const u = { ...data, id: randomBytes(8).toString("hex") }; users.set(u.id, u); return copy(u); },
  async getUser(id) { return copy(users.get(id)); },
  async getUserByEmail(email) { return copy([...users.values()].find((u) => u.email === email)); },
  async getUserByAccount() { return null; },
  async updateUser(data) { const u = Object.assign(users.get(data.id), data); return copy(u); },
  async linkAccount(account) { return account; },
  async createSession(data) { sessions.set(data.sessionToken, { ...data }); return copy(data); },
  async getSessionAndUser(token) {
    const session = sessions.get(token);
    return session ? { session: copy(session), user: copy(users.get(session.userId)) } : null;
  },
  async updateSession(data) {
    const session = sessions.get(data.sessionToken);
    return session ? copy(Object.assign(session, data)) : null;
  },
  async deleteSession(token) { const s = sessions.get(token); sessions.delete(token); return copy(s); },
};

const config = {
  adapter,
  session: { strategy: "database" },
  providers: [],
  secret: randomBytes(32).toString("hex"),
  trustHost: true,
  basePath: "/api/auth",
  callbacks: {
    // The pattern Auth.js documents for exposing the user's id (and a role) to the app.
    session({ session, user }) {
      session.user.id = user.id;
      session.user.role = user.role;
      return session;
    },
  },
};

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host}`);
    if (req.method === "POST" && url.pathname === "/test/revoke") {
      sessions.delete(sessionToken);
      res.writeHead(204).end();
      return;
    }
    const headers = new Headers();
    for (const [name, value] of Object.entries(req.headers)) {
      for (const v of [value].flat()) headers.append(name, v);
    }
    const response = await Auth(new Request(url, { method: req.method, headers }), config);
    const out = {};
    response.headers.forEach((value, name) => { if (name !== "set-cookie") out[name] = value; });
    const cookies = response.headers.getSetCookie();
    if (cookies.length) out["set-cookie"] = cookies;
    res.writeHead(response.status, out);
    res.end(Buffer.from(await response.arrayBuffer()));
  } catch (error) {
    res.writeHead(500).end(String(error));
  }
});

server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  process.stdout.write(JSON.stringify({ port, cookie: { name: "authjs.session-token", value: sessionToken } }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
