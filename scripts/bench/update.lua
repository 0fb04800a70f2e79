-- wrk script for the bench: PATCH …/ops/update round-robin over the
-- elements named in BENCH_SLUGS (comma separated) of circle BENCH_CIRCLE.
-- Each request changes the spec, so each is a new version.
local circle = os.getenv("BENCH_CIRCLE")
local slugs = {}
for s in string.gmatch(os.getenv("BENCH_SLUGS"), "[^,]+") do
  slugs[#slugs + 1] = s
end
local n = 0
wrk.method = "PATCH"
wrk.headers["Content-Type"] = "application/json"

request = function()
  n = n + 1
  local path = "/api/" .. circle .. "/" .. slugs[(n % #slugs) + 1] .. "/ops/update"
  local body = '{"spec":{"connection":{"max_connections":' .. (100 + n % 5000) .. '}}}'
  return wrk.format(nil, path, nil, body)
end
