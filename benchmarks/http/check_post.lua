-- POST /v1/check with a random check from the list (as a JSON body) on every request.
-- usage: wrk ... -s check_post.lua http://127.0.0.1:PORT -- QUERIES_FILE
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

local requests = {}

function init(args)
  lib.seed()
  local headers = { ["Content-Type"] = "application/json" }
  for i, path in ipairs(lib.read_queries(args[1])) do
    requests[i] = wrk.format("POST", "/v1/check", headers, lib.check_json(path))
  end
end

function request()
  return requests[math.random(#requests)]
end

done = lib.done
