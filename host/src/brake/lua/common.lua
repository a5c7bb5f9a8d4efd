-- Shared by the breaker scripts (prepended to each): the state hash, the sliding window of
-- outcomes and the transitions, each of which appends its audit record to the outbox in the
-- same script, so a transition is never made without its record nor recorded without being
-- made.
--
-- A breaker `key` (`<pattern>|<failure type>`) has
--   retryguard:breaker:<key>        HASH state (closed|open|half_open), pattern, failure_type,
--                                   opened_at, half_open_at, open_ms, probes_left,
--                                   probe_round_at, probe_ok, probe_fail, manual, window_ms,
--                                   changed_at
--   retryguard:breaker:<key>:ok     ZSET of the retried jobs that succeeded (score: when)
--   retryguard:breaker:<key>:fail   ZSET of those that failed again
--   retryguard:breakers             SET of every key
-- A settings vector `cfg` is {rate, window_ms, min_outcomes, open_ms, max_open_ms, probes}.
local B = 'retryguard:breaker:'
local BREAKERS = 'retryguard:breakers'
local OUTBOX = 'retryguard:audit:outbox'

local function brk_cfg(at)
  return {
    rate = tonumber(ARGV[at]), window_ms = tonumber(ARGV[at + 1]),
    min = tonumber(ARGV[at + 2]), open_ms = tonumber(ARGV[at + 3]),
    max_open_ms = tonumber(ARGV[at + 4]), probes = tonumber(ARGV[at + 5]),
  }
end

local function brk_get(key, pattern, failure_type)
  local flat = redis.call('HGETALL', B .. key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  h.exists = #flat > 0
  h.state = h.state or 'closed'
  h.pattern = pattern
  h.failure_type = failure_type
  return h
end

-- The outcomes in the window ending at `now` (older ones are dropped).
local function brk_counts(key, now, window_ms)
  local ok, fail = B .. key .. ':ok', B .. key .. ':fail'
  redis.call('ZREMRANGEBYSCORE', ok, '-inf', '(' .. (now - window_ms))
  redis.call('ZREMRANGEBYSCORE', fail, '-inf', '(' .. (now - window_ms))
  return redis.call('ZCARD', ok), redis.call('ZCARD', fail)
end

-- The record enters the outbox as one field `r`, a JSON object of strings (docs/audit.md).
local function brk_audit(key, h, decision, actor, reason, counts)
  redis.call('XADD', OUTBOX, '*', 'r', cjson.encode({
    user_or_system = tostring(actor), retry_reason = tostring(reason),
    decision = tostring(decision), failure_type = tostring(h.failure_type),
    filter = cjson.encode({pattern = h.pattern, breaker = key}),
    counts = cjson.encode(counts), dry_run_flag = 'false', forced = 'false'}))
end

local function brk_set(key, h, now, ...)
  redis.call('HSET', B .. key, 'pattern', h.pattern, 'failure_type', h.failure_type,
    'changed_at', now, ...)
  redis.call('SADD', BREAKERS, key)
end

-- closed or half_open -> open. From half_open the open time doubles (up to the cap); from
-- closed it starts again at the configured one. `manual` (a reason) opens it until closed
-- by hand.
local function brk_open(key, h, now, cfg, actor, reason, counts, manual)
  local open_ms = cfg.open_ms
  if h.state == 'half_open' and tonumber(h.open_ms) then
    open_ms = math.min(tonumber(h.open_ms) * 2, cfg.max_open_ms)
  end
  brk_set(key, h, now, 'state', 'open', 'opened_at', now, 'open_ms', open_ms,
    'probes_left', 0, 'probe_ok', 0, 'probe_fail', 0)
  if manual then
    redis.call('HSET', B .. key, 'manual', manual)
    redis.call('HDEL', B .. key, 'half_open_at')
  else
    redis.call('HSET', B .. key, 'half_open_at', now + open_ms)
    redis.call('HDEL', B .. key, 'manual')
  end
  counts.open_seconds = open_ms / 1000
  brk_audit(key, h, 'breaker_opened', actor, reason, counts)
  h.state, h.open_ms, h.half_open_at, h.manual = 'open', open_ms, now + open_ms, manual
end

local function brk_half_open(key, h, now, cfg)
  brk_set(key, h, now, 'state', 'half_open', 'probes_left', cfg.probes,
    'probe_round_at', now, 'probe_ok', 0, 'probe_fail', 0)
  brk_audit(key, h, 'breaker_half_opened', 'retryguard',
    'open for ' .. (tonumber(h.open_ms) or cfg.open_ms) / 1000 .. ' s: letting '
      .. cfg.probes .. ' probes through', {probes = cfg.probes})
  h.state, h.probes_left, h.probe_round_at = 'half_open', cfg.probes, now
end

-- -> closed, with an empty window and the open time back to the configured one.
local function brk_close(key, h, now, actor, reason, counts)
  brk_set(key, h, now, 'state', 'closed', 'probes_left', 0, 'probe_ok', 0, 'probe_fail', 0)
  redis.call('HDEL', B .. key, 'opened_at', 'half_open_at', 'open_ms', 'manual')
  redis.call('DEL', B .. key .. ':ok', B .. key .. ':fail')
  brk_audit(key, h, 'breaker_closed', actor, reason, counts)
  h.state = 'closed'
end
