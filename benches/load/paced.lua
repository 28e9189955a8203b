-- wrk script: tokens.lua's requests, paced. Each connection waits PACE_MS between its requests, so
-- 32 connections at 16 ms offer 2000 requests/s in total whatever the server's speed: the latency
-- figures then describe a server at a fixed, sub-saturation load, not a queue.
--
-- usage: wrk ... -s paced.lua URL -- TOKENS_FILE THREADS PACE_MS
-- (run from the repository root: the request set and the report line come from tokens.lua)
dofile("benches/load/tokens.lua")

local tokens_init = init
function init(args)
  tokens_init(args)
  pace_ms = assert(tonumber(args[3]), "usage: wrk ... -s paced.lua URL -- TOKENS_FILE THREADS PACE_MS")
end

-- wrk calls delay() before each request when the script defines it.
function delay()
  return pace_ms
end
