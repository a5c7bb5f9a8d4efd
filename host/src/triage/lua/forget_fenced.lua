-- Takes departed jobs out of the failure index, fenced by the reconciler's lease.
-- (`triage_forget_from` of forget.lua is prepended.)
--
-- A job departed when its failed registry no longer holds it with the score the index
-- holds (requeued, deleted, expired, or failed again since), which the caller passes along:
-- it is re-checked here, atomically, so a job back in the registry meanwhile stays counted.
--
-- ARGV[1] the lease token   ARGV[2] now (epoch seconds)
-- then per job (3): fingerprint, id, queue
-- Returns the number of jobs removed, or -1 when the lease is not the caller's.
local P = 'retryguard:triage:v1:'
if redis.call('GET', P .. 'lease') ~= ARGV[1] then return -1 end
local now = tonumber(ARGV[2])
local removed = 0
for i = 3, #ARGV - 2, 3 do
  local fp, id, queue = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local indexed = redis.call('ZSCORE', P .. 'group:' .. fp .. ':jobs:' .. queue, id)
  local current = redis.call('ZSCORE', 'rq:failed:' .. queue, id)
  -- RQ's expired failures: a score in [0, now) (its `cleanup` drops exactly those).
  local c = current and tonumber(current)
  local gone = not c or (c >= 0 and c < now) or (indexed and c ~= tonumber(indexed))
  if indexed and gone then
    removed = removed + triage_forget_from(fp, id, queue)
    -- Nothing left for the auto-retry sweeper to do (a job failed again is added anew).
    redis.call('ZREM', 'retryguard:auto:due', id)
    redis.call('ZREM', 'retryguard:auto:parked', id)
  end
end
return removed
