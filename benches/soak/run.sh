#!/usr/bin/env bash
# Soak of `ably-tokend dev`: ably-js clients churning through the sidecar plus a token-request load,
# RSS sampled over time; loopback only, bounded in time. See benches/soak/README.md.
#
# usage (from the repo root): bash benches/soak/run.sh
# env:
#   SOAK_DURATION=8m   how long the load runs (8m, 90s, 480; shorter for a quick check)
#   CLIENTS=50         churning ably-js client slots
#   CONN_RATE=150      connections per second the slots open at most
#   CHANNELS=3         channels each client attaches per cycle
#   TOKEN_RPS=500      token requests per second offered (0: none)
#   SESSIONS=1000      distinct session JWTs the token load cycles through
#   SAMPLE_SECS=5      RSS sampling interval
#   REST_SECS=150      after the load, this long with no load, still sampled (0: none)
#   OUT_DIR=target/soak   where rss.csv and report.md go
#   SKIP_BUILD=1       use the existing target/release/ably-tokend
#   TOKEND_BIN=path    soak this binary instead (implies no build)
# Exits 0 only when RSS stayed within 2x of its value at 1 minute and nothing failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))
cd "$ROOT"

log() { printf '[soak] %s\n' "$*" >&2; }
die() { printf '[soak] FAILED: %s\n' "$*" >&2; exit 1; }

export SOAK_DURATION=${SOAK_DURATION:-8m}
export OUT_DIR=${OUT_DIR:-$ROOT/target/soak}
mkdir -p "$OUT_DIR"

seconds() {
  case $1 in
    *ms) echo 1 ;; *h) echo $((${1%h} * 3600)) ;; *m) echo $((${1%m} * 60)) ;; *s) echo "${1%s}" ;; *) echo "$1" ;;
  esac
}
[[ $(seconds "$SOAK_DURATION") =~ ^[0-9]+$ ]] || die "SOAK_DURATION must look like 8m, 90s or 480, not '$SOAK_DURATION'"

command -v node >/dev/null || die "node (>= 20) is required: the clients are the ably npm package"

log "npm ci in benches/soak"
(cd "$HERE" && timeout 300 npm ci --no-audit --no-fund >"$OUT_DIR/npm.log" 2>&1) ||
  { tail -n 20 "$OUT_DIR/npm.log" >&2; die "npm ci in benches/soak failed"; }

if [[ -n ${TOKEND_BIN:-} ]]; then
  SKIP_BUILD=1
else
  TOKEND_BIN=$ROOT/target/release/ably-tokend
fi
if [[ ${SKIP_BUILD:-} == 1 ]]; then
  log "not building: soaking $TOKEND_BIN as it is"
else
  log "cargo build --release --locked"
  cargo build --release --locked >"$OUT_DIR/cargo.log" 2>&1 ||
    { tail -n 30 "$OUT_DIR/cargo.log" >&2; die "cargo build --release --locked failed"; }
fi
[[ -x $TOKEND_BIN ]] || die "$TOKEND_BIN does not exist"
export ABLY_TOKEND_BIN=$TOKEND_BIN

# The soak ends by itself; this bound (its duration plus set-up and drain time) is for a hang.
BOUND=$(($(seconds "$SOAK_DURATION") + ${REST_SECS:-150} + 180))
log "soaking $TOKEND_BIN (revision $(git rev-parse --short HEAD 2>/dev/null || echo '?')) for $SOAK_DURATION"
status=0
timeout --foreground -k 10 "$BOUND" node "$HERE/soak.mjs" || status=$?
((status != 124)) || die "the soak did not end within $BOUND s"
log "report: $OUT_DIR/report.md; samples: $OUT_DIR/rss.csv"
exit "$status"
