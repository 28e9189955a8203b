// The test page: a web app's front end as ably-tokend's README tells it to be written. It loads the
// `ably` npm package's browser build (served as /ably.js, the package's own "browser" entry), gets
// its Ably credentials from the sidecar through `authUrl`, subscribes to the signed-in user's order
// channel and writes everything it observes into the DOM, which is what the tests read.
//
// Query parameters (all set by the tests):
//   auth     "cookie": same origin; the browser sends the `__session` cookie by itself (no header)
//            "header": `authHeaders: { Authorization: "Bearer <session>" }`, the session fetched
//                      from this page's own origin (/api/session, standing in for Clerk's getToken())
//   authUrl  where ably-js asks for its token (default /api/ably-token, proxied by this origin)
//   authMethod  GET (default) or POST
//   headerName  how the Authorization key of authHeaders is spelled (header mode; default
//            "Authorization"; ably-js makes the request credentialed when it is "authorization")
//   sub, roles   who signs in (header mode only; in cookie mode the cookie says who)
//
// Nothing here leaves loopback: the broker's address comes from /config.json and the Ably
// connectivity checks and fallback hosts are switched off or pointed at the broker.

(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const log = [];
  window.__pageLog = log; // read by the tests when something fails

  function note(line) {
    log.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
    if (log.length > 400) log.splice(0, log.length - 400);
  }

  function showError(err, where) {
    if (!err) return;
    $("error").textContent = `${where}: ${err.message ?? String(err)}`;
    $("error-code").textContent = err.code != null ? String(err.code) : "";
    $("error-status").textContent = err.statusCode != null ? String(err.statusCode) : "";
    $("error-cause-code").textContent = err.cause?.code != null ? String(err.cause.code) : "";
    note(`error at ${where}: ${err.code}/${err.statusCode} ${err.message} cause=${err.cause?.code}`);
  }

  function setState(state) {
    const el = $("state");
    el.textContent = state;
    el.dataset.state = state;
    const seen = $("states");
    seen.textContent = seen.textContent ? `${seen.textContent} → ${state}` : state;
  }

  async function main() {
    const params = new URLSearchParams(location.search);
    const auth = params.get("auth") ?? "cookie";
    const authUrl = params.get("authUrl") ?? "/api/ably-token";
    $("origin").textContent = location.origin;
    $("version").textContent = Ably.Realtime.Platform?.Defaults?.agent ?? "loaded";
    $("auth").textContent = auth;
    $("auth-url").textContent = authUrl;

    const config = await (await fetch("/config.json", { cache: "no-store" })).json();
    const broker = config.broker;

    const options = {
      authUrl,
      authMethod: params.get("authMethod") ?? "GET",
      endpoint: broker.host,
      port: broker.port,
      tls: false,
      fallbackHosts: [],
      disableConnectivityCheck: true,
      wsConnectivityCheckUrl: `ws://${broker.host}:${broker.port}/`,
      logLevel: 4,
      logHandler: (msg) => note(msg),
    };
    if (auth === "header") {
      const query = new URLSearchParams({ sub: params.get("sub") ?? "", roles: params.get("roles") ?? "" });
      const res = await fetch(`/api/session?${query}`, { cache: "no-store" });
      if (!res.ok) throw new Error(`GET /api/session answered ${res.status}`);
      const session = (await res.text()).trim();
      // ably-js (XHR) sets withCredentials on the auth request when its headers have a key spelled
      // exactly "authorization"; `headerName` lets a test choose the spelling.
      options.authHeaders = { [params.get("headerName") ?? "Authorization"]: `Bearer ${session}` };
    } else if (auth !== "cookie") {
      throw new Error(`unknown auth mode ${auth}`);
    }

    const client = new Ably.Realtime(options);
    window.__ably = client; // lets the tests close it
    $("state").textContent = client.connection.state; // "states seen" lists the changes only
    client.connection.on((change) => {
      setState(change.current);
      if (change.reason) showError(change.reason, `connection ${change.current}`);
    });

    client.connection.once("connected", () => {
      const clientId = client.auth.clientId;
      $("client-id").textContent = clientId ?? "(none)";
      const name = `orders:${clientId}:status`;
      $("channel").textContent = name;
      const channel = client.channels.get(name);
      channel.on((change) => {
        $("channel-state").textContent = change.current;
        if (change.reason) showError(change.reason, `channel ${change.current}`);
      });
      channel
        .subscribe((message) => {
          const li = document.createElement("li");
          li.dataset.name = message.name ?? "";
          li.textContent = `${message.name}: ${typeof message.data === "string" ? message.data : JSON.stringify(message.data)}`;
          $("messages").appendChild(li);
        })
        .catch((err) => showError(err, "subscribe"));
    });
  }

  main().catch((err) => showError(err, "page"));
})();
