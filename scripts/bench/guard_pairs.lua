-- wrk script: idempotency-guard begin+complete pairs on distinct keys.
-- Each thread keeps a queue of acquired tokens: a connection that is free sends the
-- `complete` of a token waiting in the queue, else the `begin` of a new key. The completes
-- counted at the end are the pairs done.
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("id", thread_id)
  thread_id = thread_id + 1
  table.insert(threads, thread)
end

function init(args)
  n = 0
  waiting = {}
  completes = 0
  begins = 0
  errors = 0
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("RETRYGUARD_TOKEN") then
    wrk.headers["Authorization"] = "Bearer " .. os.getenv("RETRYGUARD_TOKEN")
  end
end

function request()
  local w = table.remove(waiting)
  if w then
    return wrk.format("POST", "/api/v1/idempotency/" .. w.key .. "/complete", nil,
      '{"token": ' .. w.token .. ', "result": {"charged": true}}')
  end
  n = n + 1
  local key = "bench-" .. id .. "-" .. n .. "-" .. math.random(1, 1000000000)
  return wrk.format("POST", "/api/v1/idempotency/" .. key .. "/begin", nil,
    '{"fingerprint": "f", "lease_seconds": 60}')
end

function response(status, headers, body)
  if status == 201 then
    begins = begins + 1
    local token = body:match('"token"%s*:%s*(%d+)')
    local key = body:match('"key"%s*:%s*"([^"]+)"')
    if token and key then
      table.insert(waiting, {key = key, token = token})
    end
  elseif status == 200 then
    completes = completes + 1
  else
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local c, b, e = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("completes")
    b = b + t:get("begins")
    e = e + t:get("errors")
  end
  local seconds = summary.duration / 1e6
  io.write(string.format("guard: %d begins, %d completes (pairs), %d errors in %.1f s\n",
    b, c, e, seconds))
  io.write(string.format("guard pairs/s: %.0f\n", c / seconds))
  io.write(string.format("request latency p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
