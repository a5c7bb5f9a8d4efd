-- Opens, closes or resets a breaker by hand (`common.lua` is prepended).
--
-- ARGV[1] now (ms)   ARGV[2] open|close|reset   ARGV[3] key   ARGV[4] pattern
-- ARGV[5] failure type   ARGV[6] actor   ARGV[7] reason   then cfg (6)
-- Returns the state after.
--
-- open: held until closed by hand (it never half-opens by itself). close: closed, with an
-- empty window. reset: forgotten altogether (it is listed again once outcomes come in).
local now, op, key, actor, reason = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[6], ARGV[7]
local cfg = brk_cfg(8)
local h = brk_get(key, ARGV[4], ARGV[5])
if op == 'open' then
  brk_open(key, h, now, cfg, actor, reason, {manual = true}, reason)
  return 'open'
elseif op == 'close' then
  brk_close(key, h, now, actor, reason, {manual = true})
  return 'closed'
end
redis.call('DEL', B .. key, B .. key .. ':ok', B .. key .. ':fail')
redis.call('SREM', BREAKERS, key)
brk_audit(key, h, 'breaker_reset', actor, reason, {manual = true})
return 'closed'
