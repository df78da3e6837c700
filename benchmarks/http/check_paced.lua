-- GET /v1/check with a random query, each connection pausing between requests: a load below
-- the server's capacity, to measure latency rather than throughput (at saturation a check's
-- latency is mostly its wait in the queue). The pause is WRK_PAUSE_MS milliseconds (default 1,
-- wrk's timer granularity), so the rate is about connections / (pause + latency).
-- usage: WRK_PAUSE_MS=1 wrk -c64 ... -s check_paced.lua http://127.0.0.1:PORT -- QUERIES_FILE
-- check.lua's requests (init, request, done), plus wrk's delay().
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "check.lua")

local pause = tonumber(os.getenv("WRK_PAUSE_MS") or "1")

function delay()
  return pause
end
