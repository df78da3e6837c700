-- GET /v1/check with a random query from the list on every request.
-- usage: wrk ... -s check.lua http://127.0.0.1:PORT -- QUERIES_FILE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

local requests = {}

function init(args)
  lib.seed()
  -- Format every request once, up front: the load generator shares the cores with the
  -- server, so it should spend as little as it can per request.
  for i, path in ipairs(lib.read_queries(args[1])) do
    requests[i] = wrk.format("GET", path)
  end
end

function request()
  return requests[math.random(#requests)]
end

done = lib.done
