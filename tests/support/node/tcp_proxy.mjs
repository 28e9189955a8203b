// A loopback TCP proxy for fault injection, shared by the Node suites (tests/e2e, tests/browser):
// point a client at it instead of the broker (e.g. ably-js `{ endpoint: "127.0.0.1", port:
// proxy.port }`) and it forwards every connection to the target, until told otherwise:
//
// - `freeze()`: a dead network. Nothing is forwarded either way, connections (and new ones) are
//   held open, and a side that closes meanwhile is not told to the other: no FIN, no RST, as when
//   a cable is pulled or a phone goes out of coverage.
// - `drop()`: every open connection is destroyed at once, both sides (a broken link both ends see).
//   New connections are forwarded as usual, so a client can reconnect (and resume) straight away.
// - `resume()`: forwarding starts again; what was held is delivered, and a side that closed while
//   frozen now closes the other.
// - `close()`: stops listening and destroys everything; bounded.
//
// Bounded: at most `maxConnections` connections (more are refused), at most `maxHeldBytes` held
// per direction while frozen (past it that side is paused and its data stays in the kernel).
// Imports node: builtins only (see stack.mjs).

import net from "node:net";

const DEFAULTS = { host: "127.0.0.1", maxConnections: 64, maxHeldBytes: 1024 * 1024, closeMs: 2_000 };

/** One proxied connection: the client's socket and the target's. */
class Pair {
  constructor(proxy, client) {
    this.proxy = proxy;
    this.client = client;
    this.target = null;
    this.ended = false;
    this.closedWhileFrozen = false;
    this.held = { toTarget: [], toClient: [], toTargetBytes: 0, toClientBytes: 0 };
    client.pause();
    client.on("error", () => this.closed());
    client.on("close", () => this.closed());
    if (!proxy.frozen) this.connect();
  }

  connect() {
    if (this.target || this.ended) return;
    const { port, host } = this.proxy.targetAddress;
    const target = net.connect({ port, host });
    this.target = target;
    target.pause();
    target.on("error", () => this.closed());
    target.on("close", () => this.closed());
    target.on("connect", () => {
      this.forward(this.client, target, "toTarget");
      this.forward(target, this.client, "toClient");
      if (!this.proxy.frozen) this.flow();
    });
  }

  /** Copy `from` → `to`, holding chunks while frozen and honouring back-pressure. */
  forward(from, to, direction) {
    from.on("data", (chunk) => {
      if (this.proxy.frozen) {
        this.held[direction].push(chunk);
        this.held[`${direction}Bytes`] += chunk.length;
        if (this.held[`${direction}Bytes`] >= this.proxy.options.maxHeldBytes) from.pause();
        return;
      }
      if (!to.write(chunk)) {
        from.pause();
        to.once("drain", () => {
          if (!this.proxy.frozen && !this.ended) from.resume();
        });
      }
    });
  }

  /** Deliver what was held, then let data flow again. */
  flow() {
    if (this.ended || !this.target) return;
    for (const [direction, to] of [
      ["toTarget", this.target],
      ["toClient", this.client],
    ]) {
      for (const chunk of this.held[direction]) to.write(chunk);
      this.held[direction] = [];
      this.held[`${direction}Bytes`] = 0;
    }
    this.client.resume();
    this.target.resume();
  }

  freeze() {
    this.client.pause();
    this.target?.pause();
  }

  /** After a freeze: connect, deliver, flow, and pass on a close that happened meanwhile. */
  thaw() {
    if (this.closedWhileFrozen) return this.destroy();
    if (!this.target) return this.connect();
    this.flow();
  }

  /** One side closed: end the other too, unless the network is "dead" (frozen). */
  closed() {
    if (this.ended) return;
    if (this.proxy.frozen) {
      this.closedWhileFrozen = true;
      return;
    }
    this.destroy();
  }

  destroy() {
    if (this.ended) return;
    this.ended = true;
    this.client.destroy();
    this.target?.destroy();
    this.proxy.pairs.delete(this);
  }
}

/**
 * Start a proxy on `host`:0 forwarding to `target` ({port, host}). Resolves with
 * {host, port, freeze(), drop(), resume(), close(), connections(), frozen}.
 */
export async function startTcpProxy(target, options = {}) {
  const opts = { ...DEFAULTS, ...options };
  const proxy = {
    options: opts,
    targetAddress: { port: target.port, host: target.host ?? "127.0.0.1" },
    frozen: false,
    pairs: new Set(),
    /** Connections accepted so far (dropped and closed ones included). */
    accepted: 0,
  };
  const server = net.createServer((client) => {
    if (proxy.pairs.size >= opts.maxConnections) {
      client.destroy();
      return;
    }
    proxy.accepted += 1;
    proxy.pairs.add(new Pair(proxy, client));
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, opts.host, resolve);
  });
  return Object.assign(proxy, {
    host: opts.host,
    port: server.address().port,
    /** Open proxied connections. */
    connections: () => proxy.pairs.size,
    freeze() {
      proxy.frozen = true;
      for (const pair of proxy.pairs) pair.freeze();
    },
    drop() {
      for (const pair of [...proxy.pairs]) pair.destroy();
    },
    resume() {
      proxy.frozen = false;
      for (const pair of [...proxy.pairs]) pair.thaw();
    },
    async close() {
      proxy.frozen = false;
      for (const pair of [...proxy.pairs]) pair.destroy();
      await Promise.race([
        new Promise((resolve) => server.close(resolve)),
        new Promise((resolve) => setTimeout(resolve, opts.closeMs)),
      ]);
    },
  });
}
