-- One GraphQL POST, sent over and over by wrk (bench/loadgen.py starts it).
-- BENCH_BODY_FILE holds the request body, BENCH_HEADERS_FILE "Name: value" lines.
-- At the end one line "BENCH_RESULT {json}" reports counts, errors and latencies (µs).

local function slurp(path)
  local file = assert(io.open(assert(path, "path not set"), "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

wrk.method = "POST"
wrk.body = slurp(os.getenv("BENCH_BODY_FILE"))
for line in slurp(os.getenv("BENCH_HEADERS_FILE")):gmatch("[^\r\n]+") do
  local name, value = line:match("^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
