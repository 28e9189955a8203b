#!/usr/bin/env bash
# Service-level load benchmark: the release build of ably-tokend against the hand-written Node
# token route (shared/peers/node-token-route), same machine, same token set, same wrk settings.
#
# usage (from the repo root): bash benches/load/run.sh
# env:
#   MODE=shared|onecore    shared (default): wrk -t2 and the server share both cores, one server after
#                          the other; onecore: server pinned to CPU 0, wrk -t1 to CPU 1, interleaved
#                          rounds, CPU per request from /proc, a paced run, the openssl RSA ceiling
#                          (benches/load/onecore.sh; ROUNDS=3, PACED_RPS=2000)
#   ONLY=both|peer|tokend  which servers to measure (default both; peer works before the Rust binary exists)
#   DURATION=20s           measured wrk run per server (a 5 s warm-up before each is discarded)
#   TOKENS=2000            distinct session tokens to mint and cycle through
#   OUT=target/bench-load.md   where the markdown report goes
#   PEER_DIR=...           the peer's source (default: ../shared/peers/node-token-route beside the repo)
#   SKIP_BUILD=1           use the existing target/release/ably-tokend instead of building it
#   TOKEND_BIN=path        measure this ably-tokend binary instead (implies no build), e.g. another feature set
#   KEEP_TMP=1             keep the temp dir (configs, logs, tokens, raw wrk output) for inspection
# See benches/load/README.md for what the numbers mean.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

MODE=${MODE:-shared}
ONLY=${ONLY:-both}
DURATION=${DURATION:-20s}
WARMUP=5s
TOKENS=${TOKENS:-2000}
OUT=${OUT:-target/bench-load.md}
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peers/node-token-route}
# Recorded in the report before the defaults below fill these in.
INVOCATION="MODE=$MODE ONLY=$ONLY DURATION=$DURATION TOKENS=$TOKENS${SKIP_BUILD:+ SKIP_BUILD=$SKIP_BUILD}${TOKEND_BIN:+ TOKEND_BIN=$TOKEND_BIN} bash benches/load/run.sh"
if [[ -n ${TOKEND_BIN:-} ]]; then
  SKIP_BUILD=1
else
  TOKEND_BIN=$ROOT/target/release/ably-tokend
fi
# Fixed, not knobs: a ratio is only comparable across runs when the load shape is the same.
THREADS=2
CONNECTIONS=32
API_KEY=appId.keyId:benchsecret

case $MODE in shared) SERVER_PIN=() ;; onecore) SERVER_PIN=(taskset -c 0) ;; *) echo "MODE must be shared or onecore, not '$MODE'" >&2; exit 2 ;; esac
case $ONLY in both | peer | tokend) ;; *) echo "ONLY must be both, peer or tokend, not '$ONLY'" >&2; exit 2 ;; esac
[[ $TOKENS =~ ^[0-9]+$ && $TOKENS -ge 4 ]] || { echo "TOKENS must be an integer >= 4 (one support user at least), not '$TOKENS'" >&2; exit 2; }

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] FAILED: %s\n' "$*" >&2; exit 1; }
# For failed installs and builds: the tool's own last words say more than our one line.
die_with_log() { log "--- last lines of $2 ---"; tail -n 30 "$2" >&2; die "$1"; }
want() { [[ $ONLY == both || $ONLY == "$1" ]]; }

# wrk and timeout take "20s"/"1m"; bash arithmetic needs plain seconds for the outer time bound.
seconds() {
  case $1 in
    *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
  esac
}
[[ $(seconds "$DURATION") =~ ^[0-9]+$ ]] || { echo "DURATION must look like 20s, 1m or 30, not '$DURATION'" >&2; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/ably-tokend-bench.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A graceful shutdown may wait for connections to drain; bound it so the script always ends.
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if ((status != 0)); then
    # The servers' own words are usually the fastest way to see why a run failed.
    for f in "$TMP"/{jwks,peer,tokend}.log; do
      [[ -s $f ]] || continue
      log "--- last lines of $(basename "$f") ---"
      tail -n 20 "$f" >&2
    done
  fi
  if [[ ${KEEP_TMP:-} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Poll until "$@" succeeds, at most $1 times 0.1 s; give up early if the server process has died,
# so a crash is reported as a crash instead of as a timeout.
wait_until() {
  local what=$1 tries=$2 pid=$3
  shift 3
  for ((i = 0; i < tries; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "$what exited before it was ready"
    sleep 0.1
  done
  die "$what not ready after $((tries / 10)) s"
}

# Ports are taken from the kernel (bind to port 0) rather than hard-coded, so two runs, or a
# developer's own servers, never collide. All sockets are held open together so the ports differ.
free_ports() {
  node -e '
    const net = require("node:net");
    const n = Number(process.argv[1]);
    const servers = Array.from({ length: n }, () => net.createServer());
    Promise.all(servers.map((s) => new Promise((ok) => s.listen(0, "127.0.0.1", ok)))).then(() => {
      console.log(servers.map((s) => s.address().port).join(" "));
      servers.forEach((s) => s.close());
    });' "$1"
}

# ---------------------------------------------------------------------------------------------
# 1. Tools and dependencies. The machine may be fresh, so the script installs what it uses.
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  # Only refresh the package lists when the cached ones are too old to find wrk: update is slow.
  DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >"$TMP/apt.log" 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update >>"$TMP/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y wrk >>"$TMP/apt.log" 2>&1; } ||
    die_with_log "could not install wrk" "$TMP/apt.log"
fi
command -v node >/dev/null || die "node is required (the JWKS server and the peer are Node programs)"

log "npm ci in benches/load"
(cd "$HERE" && timeout 300 npm ci --no-audit --no-fund >"$TMP/npm-bench.log" 2>&1) ||
  die_with_log "npm ci in benches/load failed" "$TMP/npm-bench.log"

if want peer; then
  [[ -f $PEER_DIR/server.mjs ]] || die "peer not found at $PEER_DIR (set PEER_DIR)"
  # shared/ is read-only and shared with other checkouts: install into a private copy.
  log "npm ci in a copy of $PEER_DIR"
  mkdir "$TMP/peer"
  tar -C "$PEER_DIR" --exclude=node_modules -cf - . | tar -C "$TMP/peer" -xf -
  chmod -R u+w "$TMP/peer"
  (cd "$TMP/peer" && timeout 300 npm ci --no-audit --no-fund >"$TMP/npm-peer.log" 2>&1) ||
    die_with_log "npm ci in the peer copy failed" "$TMP/npm-peer.log"
fi

if want tokend; then
  if [[ ${SKIP_BUILD:-} == 1 ]]; then
    log "not building: measuring $TOKEND_BIN as it is"
  else
    log "cargo build --release --locked"
    cargo build --release --locked >"$TMP/cargo.log" 2>&1 ||
      die_with_log "cargo build --release --locked failed" "$TMP/cargo.log"
  fi
  [[ -x $TOKEND_BIN ]] || die "$TOKEND_BIN does not exist (use ONLY=peer until the binary is built)"
fi

# ---------------------------------------------------------------------------------------------
# 2. The identity provider: JWKS plus the token set, shared by both servers.
TOKENS_FILE=$TMP/tokens.txt
log "minting $TOKENS RS256 session tokens"
node "$HERE/jwks-and-tokens.mjs" --tokens "$TOKENS_FILE" --port-file "$TMP/jwks.port" \
  --count "$TOKENS" >"$TMP/jwks.log" 2>&1 &
JWKS_PID=$!
PIDS+=("$JWKS_PID")
# Minting is about 0.5 ms a token; allow a generous bound that scales with TOKENS.
wait_until "the JWKS server" $((100 + TOKENS / 10)) "$JWKS_PID" test -s "$TMP/jwks.port"
JWKS_PORT=$(<"$TMP/jwks.port")
ISSUER=http://127.0.0.1:$JWKS_PORT
JWKS_URL=$ISSUER/.well-known/jwks.json

PORTS=$(free_ports 2) || die "could not reserve two free ports on 127.0.0.1"
read -r PEER_PORT TOKEND_PORT <<<"$PORTS"

# ---------------------------------------------------------------------------------------------
# 3. The servers under test.
declare -A URL PID
if want peer; then
  PORT=$PEER_PORT ABLY_API_KEY=$API_KEY JWKS_URL=$JWKS_URL ISSUER=$ISSUER ROLE_CLAIM=metadata \
    "${SERVER_PIN[@]}" node "$TMP/peer/server.mjs" >"$TMP/peer.log" 2>&1 &
  PEER_PID=$!
  PIDS+=("$PEER_PID")
  PID[peer]=$PEER_PID
  URL[peer]=http://127.0.0.1:$PEER_PORT/api/ably-token
  # The peer has no readiness route; any HTTP answer (its 404) means it is listening.
  wait_until "the peer" 100 "$PEER_PID" curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$PEER_PORT/"
  log "peer ready on 127.0.0.1:$PEER_PORT"
fi

if want tokend; then
  # The same authorisation as the peer's capabilityFor(): every user is a member; support adds
  # orders:*. No ttl caps, so both hand out 1 h tokens.
  cat >"$TMP/bench-policy.toml" <<'EOF'
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
  # rate_limit_per_second = 0: the sidecar's per-address limit (50/s by default) would turn nearly
  # all of wrk's traffic, which comes from one address, into 429s; the peer has no limiter, and
  # behind a load balancer the limit is set per deployment anyway.
  cat >"$TMP/bench.toml" <<EOF
[server]
bind = "127.0.0.1:$TOKEND_PORT"
rate_limit_per_second = 0
${TOKEND_SERVER_EXTRA:-}

[log]
level = "${TOKEND_LOG_LEVEL:-info}"

[ably]
api_key = "$API_KEY"

[[issuers]]
name = "bench"
issuer = "$ISSUER"
jwks_url = "$JWKS_URL"
algorithms = ["RS256"]
roles_claim = "/metadata/role"

[policy]
path = "$TMP/bench-policy.toml"
watch = false
EOF
  # A developer's own ABLY_TOKEND_* / ABLY_API_KEY would override the file (README.md, "Configuration") and
  # silently change what is measured, so the server gets exactly the bench settings.
  unset_vars=()
  while read -r name; do unset_vars+=(-u "$name"); done < <(compgen -e | grep '^ABLY_TOKEND_' || true)
  env "${unset_vars[@]}" ABLY_API_KEY=$API_KEY \
    "${SERVER_PIN[@]}" "$TOKEND_BIN" serve --config "$TMP/bench.toml" >"$TMP/tokend.log" 2>&1 &
  TOKEND_PID=$!
  PIDS+=("$TOKEND_PID")
  PID[tokend]=$TOKEND_PID
  URL[tokend]=http://127.0.0.1:$TOKEND_PORT/api/ably-token
  # /readyz turns 200 only once the policy is loaded and the JWKS fetched: a real readiness signal.
  wait_until "ably-tokend" 100 "$TOKEND_PID" curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:$TOKEND_PORT/readyz"
  log "ably-tokend ready on 127.0.0.1:$TOKEND_PORT"
fi

SERVERS=()
want peer && SERVERS+=(peer)
want tokend && SERVERS+=(tokend)
declare -A NAME=([peer]=node-token-route [tokend]=ably-tokend)

# ---------------------------------------------------------------------------------------------
# 4. Sanity: a throughput number means nothing if the server answers errors fast. Check a member
# (user-1, line 1) and a support user (user-4, line 4) on each server before any load.
declare -A SAMPLE=([member]=$(sed -n 1p "$TOKENS_FILE") [support]=$(sed -n 4p "$TOKENS_FILE"))
for s in "${SERVERS[@]}"; do
  for who in member support; do
    body=$TMP/sanity-$s-$who.json
    code=$(curl -s --max-time 5 -o "$body" -w '%{http_code}' \
      -H "Authorization: Bearer ${SAMPLE[$who]}" "${URL[$s]}") || code=000
    if [[ $code != 200 ]] || ! grep -q '"mac"' "$body"; then
      die "${NAME[$s]} did not answer a $who token with 200 and a signed TokenRequest: HTTP $code, body: $(head -c 500 "$body" 2>/dev/null)"
    fi
  done
  log "${NAME[$s]}: sanity check passed (200 with a signed TokenRequest)"
done

# Comparing throughput is only fair if both do the same job: same clientId, ttl and capability.
if [[ $ONLY == both ]]; then
  for who in member support; do
    # shellcheck disable=SC2016 # JavaScript, not shell, expands these
    node -e '
      const fs = require("node:fs");
      const norm = (file) => {
        const t = JSON.parse(fs.readFileSync(file, "utf8"));
        const cap = JSON.parse(t.capability);
        const sorted = Object.fromEntries(Object.keys(cap).sort().map((k) => [k, [...cap[k]].sort()]));
        return JSON.stringify({ keyName: t.keyName, clientId: t.clientId, ttl: Number(t.ttl), capability: sorted });
      };
      const [a, b] = [norm(process.argv[1]), norm(process.argv[2])];
      if (a !== b) { console.error(`peer:        ${a}\nably-tokend: ${b}`); process.exit(1); }
    ' "$TMP/sanity-peer-$who.json" "$TMP/sanity-tokend-$who.json" ||
      die "the two servers grant different TokenRequests for a $who token (above); the comparison would be unfair"
  done
  log "both servers grant identical keyName, clientId, ttl and capability"
fi

# One value from tokens.lua's "BENCH k=v k=v ..." line.
field_of() { awk -v k="$2" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' <<<"$1"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }

# CPU accounting, in clock ticks, to tell how much of the machine something other than wrk and
# the server under test used during a run (a build in another terminal, say): on 2 cores that skews
# the figures badly, and the report should say so rather than leave a mystery.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# utime + stime of a process; of the shell's waited-for children (here: wrk) when given "children".
proc_ticks() {
  if [[ $1 == children ]]; then awk '{ print $16 + $17 }' "/proc/$$/stat"; else awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; fi
}
CLK_TCK=$(getconf CLK_TCK)

if [[ $MODE == onecore ]]; then
  # shellcheck source=benches/load/onecore.sh
  source "$HERE/onecore.sh"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# 5. Load. One server at a time, so they never compete for the 2 cores.
declare -A RESULT WRK_CMD SERVER_CPU OTHER_CPU
FAILED=()
WRK_BOUND=$(($(seconds "$DURATION") + 60))
for s in "${SERVERS[@]}"; do
  wrk_args=(-t"$THREADS" -c"$CONNECTIONS" --latency -s benches/load/tokens.lua "${URL[$s]}" -- "$TOKENS_FILE" "$THREADS")
  log "${NAME[$s]}: warm-up $WARMUP (discarded)"
  timeout --foreground 120 wrk -d"$WARMUP" "${wrk_args[@]}" >"$TMP/wrk-warmup-$s.txt" 2>&1 ||
    die "wrk warm-up against ${NAME[$s]} failed: $(tail -n 5 "$TMP/wrk-warmup-$s.txt")"
  log "${NAME[$s]}: measuring $DURATION"
  WRK_CMD[$s]="wrk -d$DURATION ${wrk_args[*]}"
  busy0=$(busy_ticks) server0=$(proc_ticks "${PID[$s]}") wrk0=$(proc_ticks children) t0=$(date +%s%N)
  timeout --foreground "$WRK_BOUND" wrk -d"$DURATION" "${wrk_args[@]}" >"$TMP/wrk-$s.txt" 2>&1 ||
    die "wrk against ${NAME[$s]} failed: $(tail -n 5 "$TMP/wrk-$s.txt")"
  busy1=$(busy_ticks) server1=$(proc_ticks "${PID[$s]}") wrk1=$(proc_ticks children) t1=$(date +%s%N)
  # Percent of one core; the server's share is what it burned to serve the load.
  SERVER_CPU[$s]=$(awk -v d=$((server1 - server0)) -v t=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.0f", 100 * d / hz / (t / 1e9) }')
  OTHER_CPU[$s]=$(awk -v d=$((busy1 - busy0 - (server1 - server0) - (wrk1 - wrk0))) -v t=$((t1 - t0)) -v hz="$CLK_TCK" 'BEGIN { v = 100 * d / hz / (t / 1e9); printf "%.0f", v < 0 ? 0 : v }')
  grep -v '^BENCH ' "$TMP/wrk-$s.txt" >&2
  line=$(grep '^BENCH ' "$TMP/wrk-$s.txt") || die "no BENCH line in wrk output for ${NAME[$s]}"
  RESULT[$s]=$line
  # Any non-2xx (counted by tokens.lua, 3xx included) or socket error makes the run untrustworthy.
  non2xx=$(field_of "$line" non2xx)
  errs=0
  for e in connect_errors read_errors write_errors timeouts; do errs=$((errs + $(field_of "$line" "$e"))); done
  ((non2xx == 0)) || FAILED+=("${NAME[$s]}: $non2xx non-2xx responses (status:count $(field_of "$line" non2xx_codes))")
  ((errs == 0)) || FAILED+=("${NAME[$s]}: $errs socket errors or timeouts")
  # wrk stops early and still prints normal-looking figures when it is interrupted (Ctrl-C).
  ran_us=$(field_of "$line" duration_us)
  ((ran_us >= $(seconds "$DURATION") * 900000)) ||
    FAILED+=("${NAME[$s]}: wrk ran only $((ran_us / 1000000)) s of $DURATION (interrupted?)")
  kill -0 "${PID[$s]}" 2>/dev/null || FAILED+=("${NAME[$s]}: the server died during the run")
done

# ---------------------------------------------------------------------------------------------
# 6. Report: terminal table plus a markdown file with enough context to compare runs later.
field() { field_of "${RESULT[$1]}" "$2"; }

CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
NPROC=$(nproc)
NOW=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
WRK_VERSION=$(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2, $3 }' || true)
NODE_VERSION=$(node --version)
if GIT_REV=$(git rev-parse --short HEAD 2>/dev/null); then
  git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV+=" (uncommitted changes in src/ or Cargo.*)"
else
  GIT_REV="no commit yet"
fi

rows=()
NOISY=()
for s in "${SERVERS[@]}"; do
  rows+=("$(printf '| %s | %s | %s | %s | %s | %s %% | %s %% |' "${NAME[$s]}" "$(field "$s" rps)" \
    "$(ms "$(field "$s" p50_us)")" "$(ms "$(field "$s" p99_us)")" "$(field "$s" non2xx)" \
    "${SERVER_CPU[$s]}" "${OTHER_CPU[$s]}")")
  ((OTHER_CPU[$s] < 15)) || NOISY+=("${NAME[$s]}: other processes used ${OTHER_CPU[$s]} % of a core during its run")
done
RATIO=
if [[ $ONLY == both ]]; then
  RATIO=$(awk -v a="$(field tokend rps)" -v b="$(field peer rps)" 'BEGIN { printf "%.2f", a / b }')
fi

mkdir -p "$(dirname "$OUT")"
{
  echo "# ably-tokend load benchmark"
  echo
  echo "| server | requests/s | p50 | p99 | non-2xx | server CPU | other CPU |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo
  [[ -n $RATIO ]] && echo "**ably-tokend / node-token-route, requests/s: ${RATIO}×**" && echo
  if ((${#FAILED[@]})); then
    echo "**RUN FAILED** — these figures are not valid:"
    printf -- '- %s\n' "${FAILED[@]}"
    echo
  fi
  if ((${#NOISY[@]})); then
    echo "**Noisy machine** — the figures are skewed by other work:"
    printf -- '- %s\n' "${NOISY[@]}"
    echo
  fi
  echo "CPU columns are percent of one core during the measured run: the server under test, and"
  echo "everything except it and wrk (should be near 0)."
  echo
  echo "Each server: ${WARMUP} warm-up (discarded), then ${DURATION} measured; ${TOKENS} distinct RS256"
  echo "session tokens (every 4th with role support) cycled by both wrk threads from different offsets."
  echo
  echo "- command: \`$INVOCATION\`"
  for s in "${SERVERS[@]}"; do echo "- ${NAME[$s]}: \`${WRK_CMD[$s]}\`"; done
  echo "- date: $NOW"
  echo "- nproc: $NPROC"
  echo "- CPU: $CPU_MODEL"
  echo "- wrk: $WRK_VERSION"
  echo "- node: $NODE_VERSION"
  if want tokend; then
    echo "- ably-tokend: $TOKEND_BIN, revision $GIT_REV"
  fi
} >"$OUT"

echo
printf '%-18s %12s %10s %10s %8s %11s %10s\n' server requests/s p50 p99 non-2xx server-CPU other-CPU
for s in "${SERVERS[@]}"; do
  printf '%-18s %12s %10s %10s %8s %10s%% %9s%%\n' "${NAME[$s]}" "$(field "$s" rps)" \
    "$(ms "$(field "$s" p50_us)")" "$(ms "$(field "$s" p99_us)")" "$(field "$s" non2xx)" \
    "${SERVER_CPU[$s]}" "${OTHER_CPU[$s]}"
done
[[ -n $RATIO ]] && echo "ratio ably-tokend/peer (requests/s): ${RATIO}x"
if ((${#NOISY[@]})); then log "WARNING: $(printf '%s; ' "${NOISY[@]}")figures skewed"; fi
echo "report written to $OUT"

if ((${#FAILED[@]})); then
  msg=$(printf '%s; ' "${FAILED[@]}")
  die "${msg%; }"
fi
