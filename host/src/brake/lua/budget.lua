-- Takes requeues from bindings' retry budgets and rate limits.
--
-- ARGV[1] now (ms)   ARGV[2] dry run (1/0)   ARGV[3] groups
-- then per group (5): kind (budget|rate), pattern, ratio (budget) or per-second limit
--   (rate), min per minute (budget; 0 for rate), requeues wanted
-- Returns per group: {allowed, left after}.
--
-- budget: requeues in this minute stay at or under max(min per minute, ratio × the
-- successful completions counted in this and the previous minute).
-- rate: requeues in this second stay at or under the limit.
local now, dry, groups = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local P = 'retryguard:budget:'
local out = {}
local at = 4
for _ = 1, groups do
  local kind, pattern, x, min, wanted = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2]),
    tonumber(ARGV[at + 3]), tonumber(ARGV[at + 4])
  at = at + 5
  local used_key, limit, ttl
  if kind == 'budget' then
    local minute = math.floor(now / 60000)
    local ok = (tonumber(redis.call('GET', P .. pattern .. ':ok:' .. minute)) or 0)
      + (tonumber(redis.call('GET', P .. pattern .. ':ok:' .. (minute - 1))) or 0)
    limit = math.max(min, math.floor(x * ok))
    used_key, ttl = P .. pattern .. ':used:' .. minute, 180000
  else
    limit = x
    used_key, ttl = 'retryguard:rate:' .. pattern .. ':' .. math.floor(now / 1000), 2000
  end
  local used = tonumber(redis.call('GET', used_key)) or 0
  local allowed = math.max(0, math.min(wanted, limit - used))
  if not dry and allowed > 0 then
    redis.call('INCRBY', used_key, allowed)
    redis.call('PEXPIRE', used_key, ttl)
  end
  out[#out + 1] = {allowed, math.max(0, limit - used - allowed)}
end
return out
