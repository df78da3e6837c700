-- POST /v1/check/batch: 100 random checks from the list per request; decisions/s is
-- requests/s x 100. A pool of 500 batches is built up front and drawn from at random.
-- usage: wrk ... -s check_batch.lua http://127.0.0.1:PORT -- QUERIES_FILE [BATCH_SIZE]
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local lib = dofile(dir .. "lib.lua")

local requests = {}

function init(args)
  lib.seed()
  local queries = lib.read_queries(args[1])
  local size = tonumber(args[2] or "100")
  local headers = { ["Content-Type"] = "application/json" }
  for b = 1, 500 do
    local items = {}
    for i = 1, size do items[i] = lib.check_json(queries[math.random(#queries)]) end
    requests[b] = wrk.format("POST", "/v1/check/batch", headers, '{"checks":[' .. table.concat(items, ",") .. ']}')
  end
end

function request()
  return requests[math.random(#requests)]
end

done = lib.done
