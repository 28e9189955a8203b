-- wrk script: tokens.lua's requests sent to GET /healthz instead of the token route — the same
-- bytes in (the Authorization header included) on the same keep-alive connections, so the server's
-- CPU per request here is what every request costs before the route does anything: the kernel's
-- TCP work, actix's HTTP/1 parsing and response writing, the middlewares (request id, span,
-- metrics). The probe's log line is at debug, so it is not written.
--
-- usage: wrk ... -s floor.lua URL -- TOKENS_FILE THREADS
-- (run from the repository root: the request set and the report line come from tokens.lua)
dofile("benches/load/tokens.lua")

local tokens_init = init
function init(args)
  tokens_init(args)
  for i = 1, #reqs do
    reqs[i] = reqs[i]:gsub("^GET /api/ably%-token ", "GET /healthz ", 1)
  end
end
