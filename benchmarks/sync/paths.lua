-- wrk script: GET /v1/check with query strings read from the file in $AUTHZ_PATHS (one per
-- line), a random one per request, so the server sees the whole query mix, not one repeated.
local paths = {}
local file = os.getenv("AUTHZ_PATHS")
for line in io.lines(file) do paths[#paths + 1] = line end
math.randomseed(os.time())

request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
