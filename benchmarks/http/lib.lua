-- Shared by the wrk scripts of benchmarks/http: read the query list, pick at random, and
-- print one machine-readable line at the end for run.sh.

local lib = {}

-- The `/v1/check?...` paths of the query file (gendata.py writes queries.txt).
function lib.read_queries(path)
  local queries = {}
  local f = assert(io.open(path, "r"), "cannot open the query file " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then queries[#queries + 1] = line end
  end
  f:close()
  assert(#queries > 0, "no queries in " .. path)
  return queries
end

-- subject, action, resource and org of one query path (ids need no URL decoding).
function lib.fields(path)
  local q = {}
  for k, v in path:gmatch("([%w_]+)=([^&]+)") do q[k] = v end
  return q
end

-- The JSON object of a check (the generated ids hold no character JSON must escape).
function lib.check_json(path)
  local q = lib.fields(path)
  return string.format('{"subject":"%s","action":"%s","resource":"%s","org":"%s"}',
    q.subject, q.action, q.resource, q.org)
end

-- Each wrk thread gets its own Lua state; give each its own random sequence.
function lib.seed()
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
end

-- `RESULT requests/s p50_us p99_us requests errors non2xx` for run.sh to parse.
function lib.done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("RESULT %.1f %.1f %.1f %d %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    summary.requests, errors, e.status))
end

return lib
