-- begin: take the lease of an idempotency key, or say why not.
--
-- KEYS[1]  the key's record, a hash `retryguard:idem:<key>`
-- ARGV[1]  the request fingerprint ("" when the caller gives none)
-- ARGV[2]  the lease, in milliseconds
-- ARGV[3]  the retention, in milliseconds (the record expires this long after its last
--          change, and never before its lease ends)
--
-- Replies (first element names the case):
--   {'acquired', token, lease_until_ms}
--   {'in_progress', remaining_ms, lease_until_ms}
--   {'completed', result_json, completed_ms}
--   {'mismatch', stored_fingerprint}
--
-- The record's `state` is `in_progress`, `completed` or `released` (a released key is free:
-- only its token is kept, so the next token is larger). Time is Redis's own (TIME), so every
-- retryguard instance agrees on when a lease ends.
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])

local h = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'token', 'lease_until_ms',
  'result', 'completed_ms')
local state, fingerprint = h[1], h[2]
local token = tonumber(h[3]) or 0
local lease_until = tonumber(h[4]) or 0

if state == 'completed' then
  if fingerprint ~= ARGV[1] then return {'mismatch', fingerprint} end
  return {'completed', h[5], h[6]}
end
if state == 'in_progress' then
  -- Held or lapsed, the key was used for this request: another request may not reuse it.
  if fingerprint ~= ARGV[1] then return {'mismatch', fingerprint} end
  if lease_until > now_ms then
    return {'in_progress', string.format('%d', lease_until - now_ms),
      string.format('%d', lease_until)}
  end
end

-- Free (absent, released, or a lease that ran out): a new owner with a new fencing token.
-- The token grows per key; its floor is the Redis clock in microseconds, so it keeps
-- growing even after the record was deleted or expired.
local new_token = math.max(token + 1, now_us)
local lease_ms = tonumber(ARGV[2])
local new_until = now_ms + lease_ms
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1],
  'state', 'in_progress',
  'fingerprint', ARGV[1],
  'token', string.format('%d', new_token),
  'lease_until_ms', string.format('%d', new_until),
  'updated_ms', string.format('%d', now_ms))
redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[3]), lease_ms))
return {'acquired', string.format('%d', new_token), string.format('%d', new_until)}
