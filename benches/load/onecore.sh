# One-core mode of run.sh (MODE=onecore), sourced by it once the servers run pinned to CPU 0 and
# have passed the sanity checks. Not meant to be run on its own.
#
# What it measures, for each server, with wrk pinned to CPU 1 so the load generator never takes
# the server's core:
# - throughput and the server's own CPU time per request (utime and stime from /proc/PID/stat),
#   in ROUNDS interleaved rounds so a slow minute of the machine hits both servers alike;
# - the same for ably-tokend's GET /healthz with the same request bytes (floor.lua): what any
#   request costs this server before its route runs (kernel TCP, HTTP/1, middlewares);
# - latency at a fixed offered load of PACED_RPS over the same 32 connections (paced.lua), with
#   Poisson arrivals and, as a second figure, with the connections in step (bursts of 32);
# - peak RSS (VmHWM);
# and, on the same core in the same run, the physical floor: `openssl speed rsa2048`'s verify rate,
# since every request costs one RS256 verification.

ROUNDS=${ROUNDS:-3}
PACED_RPS=${PACED_RPS:-2000}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $PACED_RPS =~ ^[1-9][0-9]*$ ]] || die "PACED_RPS must be a positive integer, not '$PACED_RPS'"
(($(nproc) >= 2)) || die "MODE=onecore needs two CPUs (server on 0, load on 1); nproc says $(nproc)"
command -v openssl >/dev/null || die "openssl is required for the verification ceiling"
LOAD_PIN=(taskset -c 1)
# wrk's delay() is per connection, in whole milliseconds.
PACE_MS=$((CONNECTIONS * 1000 / PACED_RPS))
((PACE_MS >= 1)) || die "PACED_RPS=$PACED_RPS is more than $CONNECTIONS connections can pace at 1 ms"

# RSA-2048 verifications per second on the server's core (openssl's machine-readable line is
# "+F2:index:bits:signs/s:verifies/s").
verify_rate() {
  taskset -c 0 openssl speed -seconds 5 -mr rsa2048 2>/dev/null | awk -F: '/^\+F2:/ { print $5; exit }'
}
utime() { awk '{ print $14 }' "/proc/$1/stat"; }
stime() { awk '{ print $15 }' "/proc/$1/stat"; }
# Microseconds of CPU per request from a tick delta.
us_per() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$2" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }'; }

check_run() {
  local name=$1 line=$2 errs=0
  local non2xx
  non2xx=$(field_of "$line" non2xx)
  for e in connect_errors read_errors write_errors timeouts; do errs=$((errs + $(field_of "$line" "$e"))); done
  ((non2xx == 0)) || FAILED+=("$name: $non2xx non-2xx responses (status:count $(field_of "$line" non2xx_codes))")
  ((errs == 0)) || FAILED+=("$name: $errs socket errors or timeouts")
}

FAILED=()
WRK_BOUND=$(($(seconds "$DURATION") + 60))
log "openssl speed rsa2048 on CPU 0 (5 s)"
CEIL_BEFORE=$(verify_rate)
[[ -n $CEIL_BEFORE ]] || die "openssl speed printed no rsa2048 verify rate"

for s in "${SERVERS[@]}"; do
  log "${NAME[$s]}: warm-up $WARMUP (discarded)"
  timeout --foreground 120 "${LOAD_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" -s benches/load/tokens.lua \
    "${URL[$s]}" -- "$TOKENS_FILE" 1 >"$TMP/wrk-warmup-$s.txt" 2>&1 ||
    die "wrk warm-up against ${NAME[$s]} failed: $(tail -n 5 "$TMP/wrk-warmup-$s.txt")"
done

# Saturating rounds, interleaved.
declare -A RPS_SUM UT_SUM ST_SUM REQ_SUM
ROUND_ROWS=()
for ((r = 1; r <= ROUNDS; r++)); do
  for s in "${SERVERS[@]}"; do
    log "${NAME[$s]}: round $r/$ROUNDS, $DURATION at full load"
    u0=$(utime "${PID[$s]}") s0=$(stime "${PID[$s]}")
    timeout --foreground "$WRK_BOUND" "${LOAD_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
      -s benches/load/tokens.lua "${URL[$s]}" -- "$TOKENS_FILE" 1 >"$TMP/wrk-$s-$r.txt" 2>&1 ||
      die "wrk against ${NAME[$s]} failed: $(tail -n 5 "$TMP/wrk-$s-$r.txt")"
    u1=$(utime "${PID[$s]}") s1=$(stime "${PID[$s]}")
    line=$(grep '^BENCH ' "$TMP/wrk-$s-$r.txt") || die "no BENCH line in wrk output for ${NAME[$s]}"
    check_run "${NAME[$s]} round $r" "$line"
    n=$(field_of "$line" requests) rps=$(field_of "$line" rps)
    RPS_SUM[$s]=$(awk -v a="${RPS_SUM[$s]:-0}" -v b="$rps" 'BEGIN { print a + b }')
    UT_SUM[$s]=$((${UT_SUM[$s]:-0} + u1 - u0)) ST_SUM[$s]=$((${ST_SUM[$s]:-0} + s1 - s0))
    REQ_SUM[$s]=$((${REQ_SUM[$s]:-0} + n))
    ROUND_ROWS+=("| $r | ${NAME[$s]} | $rps | $(us_per $((u1 - u0 + s1 - s0)) "$n") | $(us_per $((u1 - u0)) "$n") | $(us_per $((s1 - s0)) "$n") |")
  done
  if want tokend; then
    log "${NAME[tokend]} GET /healthz: round $r/$ROUNDS, $DURATION at full load"
    u0=$(utime "${PID[tokend]}") s0=$(stime "${PID[tokend]}")
    timeout --foreground "$WRK_BOUND" "${LOAD_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
      -s benches/load/floor.lua "${URL[tokend]}" -- "$TOKENS_FILE" 1 >"$TMP/wrk-floor-$r.txt" 2>&1 ||
      die "wrk against ${NAME[tokend]} /healthz failed: $(tail -n 5 "$TMP/wrk-floor-$r.txt")"
    u1=$(utime "${PID[tokend]}") s1=$(stime "${PID[tokend]}")
    line=$(grep '^BENCH ' "$TMP/wrk-floor-$r.txt") || die "no BENCH line in wrk output for /healthz"
    check_run "${NAME[tokend]} /healthz round $r" "$line"
    n=$(field_of "$line" requests) rps=$(field_of "$line" rps)
    FLOOR_RPS_SUM=$(awk -v a="${FLOOR_RPS_SUM:-0}" -v b="$rps" 'BEGIN { print a + b }')
    FLOOR_UT=$((${FLOOR_UT:-0} + u1 - u0)) FLOOR_ST=$((${FLOOR_ST:-0} + s1 - s0))
    FLOOR_REQ=$((${FLOOR_REQ:-0} + n))
    ROUND_ROWS+=("| $r | ${NAME[tokend]} GET /healthz | $rps | $(us_per $((u1 - u0 + s1 - s0)) "$n") | $(us_per $((u1 - u0)) "$n") | $(us_per $((s1 - s0)) "$n") |")
  fi
done

# Fixed offered load: Poisson arrivals, then the connections in step.
declare -A PACED STEPPED
for s in "${SERVERS[@]}"; do
  for pacing in poisson step; do
    log "${NAME[$s]}: $DURATION at $PACED_RPS requests/s offered ($pacing)"
    timeout --foreground "$WRK_BOUND" "${LOAD_PIN[@]}" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency \
      -s benches/load/paced.lua "${URL[$s]}" -- "$TOKENS_FILE" 1 "$PACE_MS" "$pacing" >"$TMP/wrk-$pacing-$s.txt" 2>&1 ||
      die "paced wrk against ${NAME[$s]} failed: $(tail -n 5 "$TMP/wrk-$pacing-$s.txt")"
    line=$(grep '^BENCH ' "$TMP/wrk-$pacing-$s.txt") || die "no BENCH line in paced wrk output for ${NAME[$s]}"
    check_run "${NAME[$s]} paced ($pacing)" "$line"
    if [[ $pacing == poisson ]]; then PACED[$s]=$line; else STEPPED[$s]=$line; fi
  done
done

log "openssl speed rsa2048 on CPU 0 again (5 s)"
CEIL_AFTER=$(verify_rate)
CEIL=$(awk -v a="$CEIL_BEFORE" -v b="${CEIL_AFTER:-$CEIL_BEFORE}" 'BEGIN { printf "%.0f", (a + b) / 2 }')

for s in "${SERVERS[@]}"; do
  kill -0 "${PID[$s]}" 2>/dev/null || FAILED+=("${NAME[$s]}: the server died during the run")
done

# ---------------------------------------------------------------------------------------------
# Report.
declare -A MEAN_RPS CPU_US RSS_MB
rows=()
for s in "${SERVERS[@]}"; do
  MEAN_RPS[$s]=$(awk -v t="${RPS_SUM[$s]}" -v r="$ROUNDS" 'BEGIN { printf "%.0f", t / r }')
  CPU_US[$s]=$(us_per $((UT_SUM[$s] + ST_SUM[$s])) "${REQ_SUM[$s]}")
  RSS_MB[$s]=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${PID[$s]}/status" 2>/dev/null || echo "?")
  p=${PACED[$s]}
  q=${STEPPED[$s]}
  rows+=("| ${NAME[$s]} | ${MEAN_RPS[$s]} | ${CPU_US[$s]} µs | $(us_per "${UT_SUM[$s]}" "${REQ_SUM[$s]}") µs | $(us_per "${ST_SUM[$s]}" "${REQ_SUM[$s]}") µs | $(field_of "$p" rps) | $(ms "$(field_of "$p" p50_us)") | $(ms "$(field_of "$p" p99_us)") | $(ms "$(field_of "$q" p99_us)") | ${RSS_MB[$s]} MB |")
done
VERIFY_US=$(awk -v c="$CEIL" 'BEGIN { printf "%.1f", 1e6 / c }')
if want tokend; then
  FLOOR_US=$(us_per $((FLOOR_UT + FLOOR_ST)) "$FLOOR_REQ")
  rows+=("| ${NAME[tokend]} GET /healthz (the HTTP floor) | $(awk -v t="$FLOOR_RPS_SUM" -v r="$ROUNDS" 'BEGIN { printf "%.0f", t / r }') | $FLOOR_US µs | $(us_per "$FLOOR_UT" "$FLOOR_REQ") µs | $(us_per "$FLOOR_ST" "$FLOOR_REQ") µs | | | | | |")
fi
SUMMARY=()
if want tokend; then
  SUMMARY+=("ably-tokend requests/s = **$(awk -v a="${MEAN_RPS[tokend]}" -v c="$CEIL" 'BEGIN { printf "%.0f", 100 * a / c }') %** of the rsa2048 verify rate ($CEIL/s, target ≥ 60 %)")
  SUMMARY+=("ably-tokend CPU per request = **$(awk -v a="${CPU_US[tokend]}" -v v="$VERIFY_US" 'BEGIN { printf "%.2f", a / v }')×** one verification ($VERIFY_US µs, target ≤ 1.6×)")
  SUMMARY+=("ably-tokend p99 at $PACED_RPS requests/s: **$(ms "$(field_of "${PACED[tokend]}" p99_us)")** with Poisson arrivals, $(ms "$(field_of "${STEPPED[tokend]}" p99_us)") with the connections in step (target ≤ 1 ms); peak RSS **${RSS_MB[tokend]} MB** (target ≤ 30 MB)")
  SUMMARY+=("the HTTP floor (GET /healthz, same bytes in) **$FLOOR_US µs** + one verification $VERIFY_US µs = **$(awk -v f="$FLOOR_US" -v v="$VERIFY_US" 'BEGIN { printf "%.1f", f + v }') µs**, the least a token request can cost this server on this core; the token route costs $(awk -v a="${CPU_US[tokend]}" -v f="$FLOOR_US" -v v="$VERIFY_US" 'BEGIN { printf "%.1f", a - f - v }') µs above it (policy, signing, JSON, the log line); the 60 % target allows $(awk -v v="$VERIFY_US" 'BEGIN { printf "%.1f", v / 0.6 }') µs in all")
fi
if [[ $ONLY == both ]]; then
  SUMMARY+=("per core, ably-tokend / node-token-route: **$(awk -v p="${CPU_US[peer]}" -v t="${CPU_US[tokend]}" 'BEGIN { printf "%.2f", p / t }')×** by CPU per request, $(awk -v a="${MEAN_RPS[tokend]}" -v b="${MEAN_RPS[peer]}" 'BEGIN { printf "%.2f", a / b }')× by requests/s (target ≥ 4×)")
fi

mkdir -p "$(dirname "$OUT")"
{
  echo "# ably-tokend load benchmark, one core"
  echo
  echo "Server pinned to CPU 0, \`wrk -t1 -c$CONNECTIONS\` pinned to CPU 1; CPU per request is the server's"
  echo "own utime + stime from /proc/PID/stat over $ROUNDS interleaved rounds of $DURATION."
  echo
  echo "| server | requests/s | CPU/request | user | kernel | paced req/s | paced p50 | paced p99 | p99 in step | peak RSS |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  printf '%s\n' "${rows[@]}"
  echo "| openssl rsa2048 verify, CPU 0 | $CEIL | $VERIFY_US µs | | | | | | | |"
  echo
  printf -- '- %s\n' "${SUMMARY[@]}"
  echo
  if ((${#FAILED[@]})); then
    echo "**RUN FAILED** — these figures are not valid:"
    printf -- '- %s\n' "${FAILED[@]}"
    echo
  fi
  echo "Rounds:"
  echo
  echo "| round | server | requests/s | CPU/request (µs) | user | kernel |"
  echo "|---:|---|---:|---:|---:|---:|"
  printf '%s\n' "${ROUND_ROWS[@]}"
  echo
  echo "openssl verify rate before and after the rounds: $CEIL_BEFORE, ${CEIL_AFTER:-?} per second."
  echo
  echo "- command: \`$INVOCATION\`"
  echo "- load: \`taskset -c 1 wrk -t1 -c$CONNECTIONS -d$DURATION --latency -s benches/load/tokens.lua URL\`; floor: \`-s benches/load/floor.lua\`; paced: \`-s benches/load/paced.lua URL -- TOKENS 1 $PACE_MS poisson|step\`"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- CPU: $(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), nproc $(nproc)"
  echo "- wrk: $(wrk -v 2>&1 | head -n1 | awk '{ print $1, $2 }'); node: $(node --version); $(openssl version)"
  want tokend && echo "- ably-tokend: $TOKEND_BIN, revision $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
} >"$OUT"

cat "$OUT"
if ((${#FAILED[@]})); then
  msg=$(printf '%s; ' "${FAILED[@]}")
  die "${msg%; }"
fi
