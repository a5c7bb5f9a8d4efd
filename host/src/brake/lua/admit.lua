-- Asks the breakers to let requeues through (`common.lua` is prepended).
--
-- ARGV[1] now (ms)   ARGV[2] dry run (1/0: decide, change nothing)   ARGV[3] groups
-- then per group (10): key, pattern, failure type, cfg (6), requeues wanted
-- Returns per group: {admitted, retry_at (ms; 0: none), state, transition ('' or a name)}.
--
-- closed: all pass. open: none pass, until `half_open_at`; then it half-opens (audited) and
-- lets `probes` through in all, whatever the callers. A half-open breaker whose probes were
-- all handed out a window ago without their outcomes coming back (a probe requeue refused,
-- a job lost) hands out a new round. Opened by hand: none pass until closed by hand.
local PROBE_WAIT_MS = 5000
local now, dry, groups = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local out = {}
local at = 4
for _ = 1, groups do
  local key, cfg, wanted = ARGV[at], brk_cfg(at + 3), tonumber(ARGV[at + 9])
  local h = brk_get(key, ARGV[at + 1], ARGV[at + 2])
  at = at + 10
  local admitted, retry_at, transition = wanted, 0, ''
  if h.state == 'open' then
    if h.manual then
      admitted, retry_at = 0, now + cfg.open_ms
    elseif now >= (tonumber(h.half_open_at) or 0) then
      if dry then
        h.state, h.probes_left = 'half_open', cfg.probes
      else
        brk_half_open(key, h, now, cfg)
        transition = 'half_opened'
      end
    else
      admitted, retry_at = 0, tonumber(h.half_open_at)
    end
  end
  if h.state == 'half_open' then
    local left = tonumber(h.probes_left) or 0
    if left <= 0 and now - (tonumber(h.probe_round_at) or 0) >= cfg.window_ms then
      left = cfg.probes
      if not dry then
        redis.call('HSET', B .. key, 'probes_left', left, 'probe_round_at', now)
      end
    end
    admitted = math.min(wanted, left)
    if not dry and admitted > 0 then
      redis.call('HINCRBY', B .. key, 'probes_left', -admitted)
    end
    retry_at = now + PROBE_WAIT_MS
  end
  out[#out + 1] = {admitted, retry_at, h.state, transition}
end
return out
