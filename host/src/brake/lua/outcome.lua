-- Feeds the outcomes of retried jobs to their breakers (`common.lua` is prepended).
--
-- ARGV[1] now (ms)   then per outcome (11): key, pattern, failure type, cfg (6),
--   succeeded (1/0), job id
-- Returns the transitions made, flat: {key, name, key, name, …}.
--
-- closed: the outcome enters the window; at `min_outcomes` or more outcomes with a failure
-- rate at or over `rate`, the breaker opens. half_open: the outcome counts as a probe's; once
-- `probes` outcomes are in, it closes when their failure rate is under `rate`, else re-opens
-- for twice as long. open: nothing was let through, so the outcome (of a retry made before
-- it opened) is not counted.
local now = tonumber(ARGV[1])
local out = {}
local at = 2
while at <= #ARGV do
  local key, cfg, ok, id = ARGV[at], brk_cfg(at + 3), ARGV[at + 9] == '1', ARGV[at + 10]
  local h = brk_get(key, ARGV[at + 1], ARGV[at + 2])
  at = at + 11
  if h.state == 'closed' then
    local set = B .. key .. (ok and ':ok' or ':fail')
    redis.call('ZADD', set, now, id .. ':' .. now)
    redis.call('PEXPIRE', B .. key .. ':ok', cfg.window_ms * 2)
    redis.call('PEXPIRE', B .. key .. ':fail', cfg.window_ms * 2)
    if not h.exists then brk_set(key, h, now, 'state', 'closed') end
    redis.call('HSET', B .. key, 'window_ms', cfg.window_ms)
    local n_ok, n_fail = brk_counts(key, now, cfg.window_ms)
    local total = n_ok + n_fail
    if total >= cfg.min and n_fail / total >= cfg.rate then
      brk_open(key, h, now, cfg, 'retryguard',
        string.format('%d of the last %d retries failed again within %d s', n_fail, total,
          cfg.window_ms / 1000),
        {succeeded = n_ok, failed_again = n_fail, failure_rate = n_fail / total})
      out[#out + 1] = key
      out[#out + 1] = 'opened'
    end
  elseif h.state == 'half_open' then
    local field = ok and 'probe_ok' or 'probe_fail'
    redis.call('HINCRBY', B .. key, field, 1)
    local n_ok = tonumber(redis.call('HGET', B .. key, 'probe_ok')) or 0
    local n_fail = tonumber(redis.call('HGET', B .. key, 'probe_fail')) or 0
    local done = n_ok + n_fail
    if done >= cfg.probes then
      local counts = {succeeded = n_ok, failed_again = n_fail, failure_rate = n_fail / done}
      if n_fail / done >= cfg.rate then
        brk_open(key, h, now, cfg, 'retryguard',
          string.format('%d of %d probes failed again', n_fail, done), counts)
        out[#out + 1] = key
        out[#out + 1] = 'opened'
      else
        brk_close(key, h, now, 'retryguard',
          string.format('%d of %d probes succeeded', n_ok, done), counts)
        out[#out + 1] = key
        out[#out + 1] = 'closed'
      end
    end
  end
end
return out
