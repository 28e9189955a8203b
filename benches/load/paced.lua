-- wrk script: tokens.lua's requests at a fixed offered rate. Each connection waits a random time
-- with mean PACE_MS before each request (exponentially distributed, so the 32 connections' requests
-- arrive as a Poisson stream of 32 000 / PACE_MS per second, the usual model of independent
-- clients), whatever the server's speed: the latency figures then describe a server at a fixed,
-- sub-saturation load, not a queue. With PACING=step every connection waits exactly PACE_MS: the
-- connections then fall into step and send in bursts of 32 each period, which measures how fast a
-- burst of 32 simultaneous requests drains rather than latency at the rate.
--
-- usage: wrk ... -s paced.lua URL -- TOKENS_FILE THREADS PACE_MS [poisson|step]
-- (run from the repository root: the request set and the report line come from tokens.lua)
dofile("benches/load/tokens.lua")

local tokens_init = init
function init(args)
  tokens_init(args)
  pace_ms = assert(tonumber(args[3]), "usage: wrk ... -s paced.lua URL -- TOKENS_FILE THREADS PACE_MS [poisson|step]")
  pacing = args[4] or "poisson"
  assert(pacing == "poisson" or pacing == "step", "pacing must be poisson or step, not " .. pacing)
  math.randomseed(os.time() + id)
end

-- wrk calls delay() before each request when the script defines it; it takes whole milliseconds,
-- so the exponential draw is rounded (its mean stays PACE_MS).
function delay()
  if pacing == "step" then
    return pace_ms
  end
  return math.floor(-pace_ms * math.log(1 - math.random()) + 0.5)
end
