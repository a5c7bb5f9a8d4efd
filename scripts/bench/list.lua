-- wrk script: GET /api/v1/jobs/failed?limit=100, printing latency percentiles.
function init(args)
  if os.getenv("RETRYGUARD_TOKEN") then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("RETRYGUARD_TOKEN")
  end
  errors = 0
end

function response(status, headers, body)
  if status ~= 200 then errors = errors + 1 end
end

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format("list: %d requests in %.1f s = %.0f/s, %d non-2xx\n",
    summary.requests, seconds, summary.requests / seconds,
    summary.errors.status))
  io.write(string.format("request latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
