-- wrk script for bench_server: POST the bytes of $WRK_BODY_FILE on every request, with the
-- headers in $WRK_HEADERS ("Name: value" lines), e.g. the v2 binary extension's
-- Inference-Header-Content-Length. wrk reads the file once, before the load starts.
local file = assert(io.open(assert(os.getenv("WRK_BODY_FILE"), "WRK_BODY_FILE is not set"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
for name, value in (os.getenv("WRK_HEADERS") or ""):gmatch("([^:\n]+):%s*([^\n]*)") do
  wrk.headers[name] = value
end
