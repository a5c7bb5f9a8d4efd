-- complete: the lease holder stores the result of its side effect.
--
-- KEYS[1]  the key's record, a hash `retryguard:idem:<key>`
-- ARGV[1]  the caller's fencing token (decimal)
-- ARGV[2]  the result, as JSON text
-- ARGV[3]  the retention, in milliseconds
--
-- Replies:
--   {'completed', result_json}   stored now, or already stored by this same token (a
--                                repeated call answers with the result stored first)
--   {'stale', state, token}      the token does not hold the key (another owner took it over,
--                                it was released, deleted or expired, or never existed)
--
-- A lease that ran out but that nobody took over may still be completed: the side effect
-- happened, and recording it is what stops a second one.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'result')
local state, token = h[1] or 'absent', h[2] or ''

if token ~= ARGV[1] then return {'stale', state, token} end
if state == 'completed' then return {'completed', h[3]} end
if state ~= 'in_progress' then return {'stale', state, token} end

redis.call('HSET', KEYS[1],
  'state', 'completed',
  'result', ARGV[2],
  'completed_ms', string.format('%d', now_ms),
  'updated_ms', string.format('%d', now_ms))
redis.call('HDEL', KEYS[1], 'lease_until_ms')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {'completed', ARGV[2]}
