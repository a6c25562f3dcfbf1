-- wrk script for bench/serving.py: POST the file named by $BENCH_BODY_FILE as JSON on every
-- request, and at the end print one line "BENCH_JSON {...}" with the counts and the latency
-- percentiles in microseconds (wrk's --latency table rounds them).

local path = assert(os.getenv("BENCH_BODY_FILE"), "set BENCH_BODY_FILE to the request body file")
local file = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"p50_us": %.1f, "p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
