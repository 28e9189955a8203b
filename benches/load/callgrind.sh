#!/usr/bin/env bash
# Instructions per token request, counted by callgrind: repeatable on a busy machine, where
# wall-clock figures are not. The server runs under valgrind with instrumentation switched on only
# around N sequential keep-alive `GET /api/ably-token` requests (RS256 session tokens, request logs
# at info, rate limit off), after 20 uncounted warm-up requests.
#
# usage (from the repo root):
#   CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --locked --target-dir target/prof
#   bash benches/load/callgrind.sh [BIN] [N] [OUT]
#     BIN  the binary (default target/prof/release/ably-tokend; line tables name the functions)
#     N    counted requests (default 500)
#     OUT  the callgrind file (default target/callgrind.out); read it with
#          callgrind_annotate --inclusive=yes OUT
# Prints the total and the count per request. Needs valgrind and node (installs jose for the JWKS
# helper with npm ci, as run.sh does). Under valgrind the CPU has no SHA extensions, so the sha2
# crate's software SHA-256 shows up: do not optimise for it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=$(realpath "${1:-$ROOT/target/prof/release/ably-tokend}")
N=${2:-500}
OUT=$(realpath -m "${3:-$ROOT/target/callgrind.out}")
command -v valgrind >/dev/null || { echo "valgrind is required (apt-get install valgrind)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no binary at $BIN" >&2; exit 1; }
[ -d "$HERE/node_modules/jose" ] || (cd "$HERE" && npm ci --no-audit --no-fund >/dev/null)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ably-tokend-callgrind.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

node "$HERE/jwks-and-tokens.mjs" --tokens "$TMP/tokens.txt" --port-file "$TMP/jwks.port" \
  --count $((N + 20)) >"$TMP/jwks.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$TMP/jwks.port" ] && break; sleep 0.2; done
JWKS_PORT=$(cat "$TMP/jwks.port")
PORT=$(node -e 'const s=require("node:net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

# The same grant as run.sh's policy: every user a member, every 4th one support too.
cat >"$TMP/policy.toml" <<'EOF'
version = 1
default_roles = ["member"]

[roles.member]
capabilities = [
  { channel = "announcements", operations = ["subscribe"] },
  { channel = "orders:{clientId}:*", operations = ["subscribe", "presence", "history"] },
]

[roles.support]
capabilities = [
  { channel = "orders:*", operations = ["subscribe", "publish", "presence", "history"] },
]
EOF
cat >"$TMP/config.toml" <<EOF
[server]
bind = "127.0.0.1:$PORT"
rate_limit_per_second = 0
[log]
level = "info"
[ably]
api_key = "appId.keyId:benchsecret"
[[issuers]]
name = "bench"
issuer = "http://127.0.0.1:$JWKS_PORT"
jwks_url = "http://127.0.0.1:$JWKS_PORT/.well-known/jwks.json"
algorithms = ["RS256"]
roles_claim = "/metadata/role"
[policy]
path = "$TMP/policy.toml"
watch = false
EOF

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT" \
  "$BIN" serve --config "$TMP/config.toml" >"$TMP/tokend.log" 2>&1 &
VG=$!
PIDS+=($VG)
for _ in $(seq 600); do
  curl -sf -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
  kill -0 "$VG" 2>/dev/null || { cat "$TMP/tokend.log" >&2; exit 1; }
  sleep 0.5
done

# N sequential requests on one keep-alive connection, tokens from OFFSET; any non-200 fails.
requests() {
  node -e '
    const http = require("node:http");
    const toks = require("node:fs").readFileSync(process.argv[1], "utf8").trim().split("\n");
    const [port, n, offset] = process.argv.slice(2).map(Number);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    (async () => {
      for (let i = 0; i < n; i++) {
        await new Promise((ok, ko) => {
          http.get({ host: "127.0.0.1", port, path: "/api/ably-token", agent,
                     headers: { authorization: "Bearer " + toks[(i + offset) % toks.length] } }, (r) => {
            if (r.statusCode !== 200) ko(new Error("status " + r.statusCode));
            r.resume(); r.on("end", ok);
          }).on("error", ko);
        });
      }
      agent.destroy();
    })().catch((e) => { console.error(e); process.exit(1); });' "$TMP/tokens.txt" "$PORT" "$1" "$2"
}

requests 20 0
callgrind_control -i on "$VG" >/dev/null
requests "$N" 20
callgrind_control -i off "$VG" >/dev/null
kill "$VG"
wait "$VG" || true
TOTAL=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
echo "$TOTAL instructions for $N requests: $((TOTAL / N)) per request ($OUT)"
