-- Adds newly seen failed jobs to the failure index, fenced by the reconciler's lease.
-- (`triage_forget_from` of forget.lua is prepended.)
--
-- Each job is added only while the failed registry still holds it with the score it was
-- read with (so a job requeued or deleted since it was read is never counted), and only once:
-- a job the index already counts in the same group with the same score is skipped; one it
-- counts elsewhere (it failed again, for another cause) is moved. Once an auto-retry sweeper
-- has run (`retryguard:auto:on` exists), a job counted anew enters its due-time index
-- (`retryguard:auto:due`), due at its failure.
--
-- ARGV[1] the lease token   ARGV[2] now (epoch ms)   ARGV[3] groups   ARGV[4] jobs
-- then per group (12): fingerprint, job type, exception type, failure type, retryable (1/0),
--   parameterized message, top frame, policy digest, broken (1/0), example job id,
--   example raw message, example traceback
-- then per job (5): id, queue, failed-registry score, failed at (epoch ms), fingerprint
--
-- Returns the number of jobs added, or -1 when the lease is not the caller's (nothing written).
local P = 'retryguard:triage:v1:'
if redis.call('GET', P .. 'lease') ~= ARGV[1] then return -1 end
local now = tonumber(ARGV[2])
local groups, jobs = tonumber(ARGV[3]), tonumber(ARGV[4])
local at = 5
for _ = 1, groups do
  local g = P .. 'group:' .. ARGV[at]
  if redis.call('HEXISTS', g, 'job_type') == 0 then
    redis.call('HSET', g, 'job_type', ARGV[at + 1], 'exc_type', ARGV[at + 2],
      'failure_type', ARGV[at + 3], 'retryable', ARGV[at + 4], 'message', ARGV[at + 5],
      'top_frame', ARGV[at + 6], 'policy_digest', ARGV[at + 7], 'broken', ARGV[at + 8],
      'count', 0, 'classified_ms', ARGV[2])
    redis.call('HSET', g .. ':example', 'job_id', ARGV[at + 9], 'message', ARGV[at + 10],
      'traceback', ARGV[at + 11])
  end
  at = at + 12
end

local oldest_hour = math.floor(now / 3600000) - 47
local auto_on = redis.call('EXISTS', 'retryguard:auto:on') == 1
local added = 0
for _ = 1, jobs do
  local id, queue, score, failed_at, fp = ARGV[at], ARGV[at + 1], ARGV[at + 2],
    tonumber(ARGV[at + 3]), ARGV[at + 4]
  at = at + 5
  local g = P .. 'group:' .. fp
  local current = redis.call('ZSCORE', 'rq:failed:' .. queue, id)
  if current and tonumber(current) == tonumber(score) and redis.call('HEXISTS', g, 'job_type') == 1 then
    local old = redis.call('HGET', P .. 'jobs', id)
    local counted = false
    if old then
      local s = redis.call('ZSCORE', P .. 'group:' .. old .. ':jobs:' .. queue, id)
      if old == fp and s and tonumber(s) == tonumber(score) then
        counted = true
      else
        triage_forget_from(old, id, queue)
      end
    end
    if not counted then
      redis.call('HSET', P .. 'jobs', id, fp)
      redis.call('ZADD', g .. ':jobs:' .. queue, score, id)
      local count = redis.call('HINCRBY', g, 'count', 1)
      redis.call('HINCRBY', g, 'q:' .. queue, 1)
      local ft = redis.call('HGET', g, 'failure_type') or ''
      redis.call('HINCRBY', P .. 'counts', queue .. '\t' .. ft, 1)
      redis.call('ZADD', P .. 'groups', count, fp)
      local first = tonumber(redis.call('HGET', g, 'first_seen') or '')
      if not first or failed_at < first then redis.call('HSET', g, 'first_seen', failed_at) end
      local last = tonumber(redis.call('HGET', g, 'last_seen') or '')
      if not last or failed_at > last then
        last = failed_at
        redis.call('HSET', g, 'last_seen', failed_at)
      end
      redis.call('ZADD', P .. 'groups:last', last, fp)
      for _, k in ipairs({g, g .. ':hours', g .. ':example', g .. ':sample'}) do
        redis.call('PERSIST', k)
      end
      local hour = math.floor(failed_at / 3600000)
      if hour >= oldest_hour then
        redis.call('HINCRBY', g .. ':hours', hour, 1)
        redis.call('HINCRBY', P .. 'hours', hour, 1)
      end
      -- Once a sweeper has run (docs/auto-retry.md), it looks at a job it has not seen as
      -- soon as the index sees it; parked or not, a new failure is looked at afresh.
      if auto_on then
        redis.call('ZADD', 'retryguard:auto:due', failed_at, id)
        redis.call('ZREM', 'retryguard:auto:parked', id)
      end
      redis.call('LPUSH', g .. ':sample', id)
      redis.call('LTRIM', g .. ':sample', 0, 9)
      added = added + 1
    end
  end
end
return added
