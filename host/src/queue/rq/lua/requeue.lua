-- Requeue one failed RQ job, exactly once, in one atomic step.
--
-- It first re-checks that the job is still the failure the decision was made about, then
-- moves it back to its queue changing only what RQ's worker needs, and in the same step
-- bumps retryguard's attempt counter and appends the audit record to the outbox.
--
-- KEYS[1] rq:failed:<queue>          the failed registry (ZSET)
-- KEYS[2] rq:job:<id>                the job hash
-- KEYS[3] rq:results:<id>            the job's results stream
-- KEYS[4] rq:queue:<queue>           the queue list
-- KEYS[5] rq:queues                  the set of queue keys
-- KEYS[6] rq:job:<id>:dependents     the job's dependents set
-- KEYS[7] retryguard:job:<id>        retryguard's retry state (hash)
-- KEYS[8] retryguard:audit:outbox    the audit outbox (stream)
-- KEYS[9] retryguard:outcomes:watch  requeued jobs whose outcome is not recorded yet (ZSET)
-- ARGV[1] job id            ARGV[2] origin queue name   ARGV[3] newest results entry id seen ('' if none)
-- ARGV[4] enqueued_at (RQ's format)                    ARGV[5] operation id
-- ARGV[6] '1' to push at the front                      ARGV[7] state TTL in seconds
-- ARGV[8] now (epoch ms)    ARGV[9] the job's created_at ARGV[10] first failure (epoch ms)
-- ARGV[11] policy digest    ARGV[12] why it is retried (the record's error_message)
-- ARGV[13..] audit record without decision/success/error_message/attempt_number:
--            field, value, field, value, ... (the record enters the outbox as one field
--            `r`, a JSON object of strings: docs/audit.md, "The outbox entry")
--
-- Returns {outcome, attempts_or_detail}: 'retried' (attempts after this retry),
-- 'already_requeued', 'stale_decision' (why), 'not_found'. The detail is printable ASCII
-- only: any byte taken from the data is escaped (`escape`), so one job's odd bytes never make
-- a reply undecodable. Every outcome but the answer to a re-sent call (and a refusal because
-- the outbox itself holds the wrong type) appends exactly one audit record, in this same step.
--
-- Every key's type is checked before anything is read or written: a command on a key of
-- the wrong type (e.g. a job hash overwritten with a string) raises an error, and Redis
-- keeps what a script wrote before its error: after the ZREM below, a failing RPUSH would
-- lose the job. So a key of the wrong type is a refusal, never an error.
--
-- `triage_forget` (triage/lua/forget.lua, prepended) takes the job out of the failure index
-- in the same step; it never raises.

local job_id, origin, seen_result, op = ARGV[1], ARGV[2], ARGV[3], ARGV[5]

-- Printable ASCII, with every other byte (and the backslash) escaped, at most 200 bytes of
-- the original: safe to put in a reply and in the audit record.
local function escape(value)
  local s = tostring(value)
  local cut = ''
  if #s > 200 then
    s, cut = string.sub(s, 1, 200), '...'
  end
  s = string.gsub(s, '[%c\128-\255\\]', function(c)
    if c == '\\' then return '\\\\' end
    return string.format('\\x%02x', string.byte(c))
  end)
  return s .. cut
end

-- The type each key must have ('none' always passes: a missing key is handled below).
-- KEYS[6] is only PERSISTed, which works on any type.
local EXPECTED = {[1] = 'zset', [2] = 'hash', [3] = 'stream', [4] = 'list', [5] = 'set',
  [7] = 'hash', [8] = 'stream', [9] = 'zset'}

-- Why KEYS[i] cannot be used, or nil when its type is right.
local function wrong_type(i)
  local found = redis.call('TYPE', KEYS[i])['ok']
  if found == 'none' or found == EXPECTED[i] then return nil end
  return escape(KEYS[i]) .. ' holds a ' .. escape(found) .. ', not a ' .. EXPECTED[i] ..
    ': nothing was changed'
end

-- Appends the audit record with the script's own verdict.
local function audit(decision, success, message, attempt)
  local record = {decision = tostring(decision), success = tostring(success),
    error_message = tostring(message), attempt_number = tostring(attempt)}
  for i = 13, #ARGV - 1, 2 do record[ARGV[i]] = ARGV[i + 1] end
  redis.call('XADD', KEYS[8], '*', 'r', cjson.encode(record))
end

-- Refuses the requeue: the record says why.
local function refuse(outcome, why)
  audit(outcome, 'false', why, escape(redis.call('HGET', KEYS[7], 'attempts') or '0'))
  return {outcome, why}
end

-- retryguard's state first: every step below reads it.
local damaged = wrong_type(7)
if damaged then
  if not wrong_type(8) then audit('stale_decision', 'false', damaged, '0') end
  return {'stale_decision', damaged}
end

-- The state belongs to this incarnation of the job id: a reused id starts afresh.
if redis.call('HGET', KEYS[7], 'created_at') ~= ARGV[9] then
  redis.call('DEL', KEYS[7])
end

-- A re-sent call of an operation that already requeued this job gets the same answer.
if redis.call('HGET', KEYS[7], 'last_operation') == op then
  return {'retried', escape(redis.call('HGET', KEYS[7], 'attempts') or '0')}
end

-- The outbox (every outcome below writes it: without it nothing is written at all) and the
-- set of requeued jobs.
damaged = wrong_type(8)
if damaged then return {'stale_decision', damaged} end
damaged = wrong_type(9)
if damaged then return refuse('stale_decision', damaged) end

if redis.call('EXISTS', KEYS[2]) == 0 then
  -- A dangling registry member: its job hash expired or was deleted.
  redis.call('ZREM', KEYS[1], job_id)
  triage_forget(job_id, origin)
  return refuse('not_found', 'job hash is gone')
end
-- The job's own keys, the queue and the set of queues: a job whose hash or results stream
-- holds another type is broken, and is never requeued.
for i = 1, 5 do
  damaged = wrong_type(i)
  if damaged then return refuse('stale_decision', damaged) end
end
if not redis.call('ZSCORE', KEYS[1], job_id) then
  return refuse('already_requeued', 'not in the failed registry')
end
local fields = redis.call('HMGET', KEYS[2], 'status', 'origin', 'rate_limit_key')
if fields[3] then
  -- RQ 3.x: a raw push would bypass the job's rate limit.
  return refuse('stale_decision', 'an RQ 3.x rate-limited job: retryguard does not requeue those yet')
end
if fields[2] ~= origin then
  return refuse('stale_decision', 'origin changed')
end
if fields[1] ~= 'failed' and fields[1] ~= 'stopped' then
  return refuse('stale_decision', 'status is ' .. escape(fields[1]))
end
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local newest_id = ''
if #newest > 0 then newest_id = newest[1][1] end
if newest_id ~= seen_result then
  return refuse('stale_decision', 'the job has a newer result: it ran again since the decision')
end

redis.call('ZREM', KEYS[1], job_id)
triage_forget(job_id, origin)
redis.call('HSET', KEYS[2], 'status', 'queued', 'started_at', '', 'ended_at', '', 'enqueued_at', ARGV[4])
redis.call('PERSIST', KEYS[2])
redis.call('PERSIST', KEYS[6])
if ARGV[6] == '1' then
  redis.call('LPUSH', KEYS[4], job_id)
else
  redis.call('RPUSH', KEYS[4], job_id)
end
redis.call('SADD', KEYS[5], KEYS[4])

local attempts = redis.call('HINCRBY', KEYS[7], 'attempts', 1)
redis.call('HSET', KEYS[7], 'created_at', ARGV[9], 'last_attempt_ms', ARGV[8],
  'last_operation', op, 'last_decision', 'retried', 'policy_digest', ARGV[11])
redis.call('HSETNX', KEYS[7], 'first_failed_ms', ARGV[10])
-- What the outcome record of this retry will need (retry/tracker.rs).
for i = 13, #ARGV - 1, 2 do
  local f = ARGV[i]
  if f == 'job_type' or f == 'queue' or f == 'failure_type' or f == 'retry_reason' then
    redis.call('HSET', KEYS[7], f, ARGV[i + 1])
  end
end
redis.call('EXPIRE', KEYS[7], ARGV[7])
redis.call('ZADD', KEYS[9], ARGV[8], job_id)

audit('retried', 'true', ARGV[12], attempts)
return {'retried', tostring(attempts)}
