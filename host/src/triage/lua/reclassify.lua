-- Gives one group a new classification (a binding changed), moving its counts per queue
-- from the old failure type to the new one in the same step. Fenced by the lease.
--
-- ARGV[1] the lease token  ARGV[2] fingerprint  ARGV[3] failure type  ARGV[4] retryable (1/0)
-- ARGV[5] policy digest    ARGV[6] now (epoch ms)
-- Returns 1 when the group changed, 0 when it was already so (or is gone), -1 without lease.
local P = 'retryguard:triage:v1:'
if redis.call('GET', P .. 'lease') ~= ARGV[1] then return -1 end
local g = P .. 'group:' .. ARGV[2]
local fields = redis.call('HGETALL', g)
local old
for i = 1, #fields, 2 do
  if fields[i] == 'failure_type' then old = fields[i + 1] end
end
if not old then return 0 end
if old ~= ARGV[3] then
  for i = 1, #fields, 2 do
    local queue = string.match(fields[i], '^q:(.*)$')
    local n = tonumber(fields[i + 1])
    if queue and n and n > 0 then
      local from, to = queue .. '\t' .. old, queue .. '\t' .. ARGV[3]
      if redis.call('HINCRBY', P .. 'counts', from, -n) <= 0 then redis.call('HDEL', P .. 'counts', from) end
      redis.call('HINCRBY', P .. 'counts', to, n)
    end
  end
end
redis.call('HSET', g, 'failure_type', ARGV[3], 'retryable', ARGV[4], 'policy_digest', ARGV[5],
  'classified_ms', ARGV[6])
return 1
