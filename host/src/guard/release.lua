-- release: the lease holder gives the key back, so a retry may run. Only for a failure
-- known to have happened BEFORE the side effect.
--
-- KEYS[1]  the key's record, a hash `retryguard:idem:<key>`
-- ARGV[1]  the caller's fencing token (decimal)
-- ARGV[2]  the retention, in milliseconds
--
-- Replies:
--   {'released'}                 released now, or already released by this same token
--   {'stale', state, token}      the token does not hold the key (or the key is completed)
--
-- The record stays, reduced to its token, so the next owner's token is still larger.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local h = redis.call('HMGET', KEYS[1], 'state', 'token')
local state, token = h[1] or 'absent', h[2] or ''

if token ~= ARGV[1] then return {'stale', state, token} end
if state == 'released' then return {'released'} end
if state ~= 'in_progress' then return {'stale', state, token} end

redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1],
  'state', 'released',
  'token', token,
  'updated_ms', string.format('%d', now_ms))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {'released'}
