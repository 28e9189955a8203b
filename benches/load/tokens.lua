-- wrk script: GET /api/ably-token with a different session token on each request, so the servers
-- pay for a real RS256 verification every time instead of hitting a per-token cache.
--
-- usage: wrk ... -s tokens.lua URL -- TOKENS_FILE THREADS
-- At the end it prints one machine-readable line starting with "BENCH " for run.sh to parse,
-- so the harness never has to scrape wrk's human-readable output.

local threads = {}
local next_id = 0

-- setup() runs in wrk's main Lua state once per thread, before that thread's init().
function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  assert(path and nthreads, "usage: wrk ... -s tokens.lua URL -- TOKENS_FILE THREADS")
  local f = assert(io.open(path, "r"))
  -- Pre-format every request once: building request strings inside request() would make the
  -- load generator, not the server, the bottleneck on a 2-core machine.
  reqs = {}
  for line in f:lines() do
    if line ~= "" then
      reqs[#reqs + 1] = wrk.format("GET", "/api/ably-token",
        { ["Authorization"] = "Bearer " .. line })
    end
  end
  f:close()
  assert(#reqs > 0, "no tokens in " .. path)
  -- Each thread starts at its own slice of the token list, so at any moment the two threads send
  -- different tokens.
  index = (id * math.floor(#reqs / nthreads)) % #reqs
  non2xx = 0
  statuses = {}
end

function request()
  index = index % #reqs + 1
  return reqs[index]
end

-- Defining response() makes wrk hand us every status. wrk's own "Non-2xx or 3xx" counter lets 3xx
-- through; a token endpoint that redirects is as broken as one that errors, so count those too.
function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    statuses[status] = (statuses[status] or 0) + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  local by_status = {}
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
    end
  end
  local codes = {}
  for status, n in pairs(by_status) do
    codes[#codes + 1] = status .. ":" .. n
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
    "non2xx=%d non2xx_codes=%s connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    bad, (#codes > 0 and table.concat(codes, ",") or "-"),
    e.connect, e.read, e.write, e.timeout))
end
