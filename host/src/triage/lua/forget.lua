-- triage_forget(id, queue): takes a job out of the failure index (keys under
-- retryguard:triage:v1:, see keyspace.rs) when the index counts it under `queue`.
-- triage_forget_from(fp, id, queue): the same for the group `fp` named by the caller (the
-- reconciler, which found the job in that group's set).
--
-- Prepended to every script that removes a member from a failed registry (requeue, delete,
-- the pruning of dangling members) and to the reconciler's, so the index follows retryguard's
-- own changes in the same atomic step. Every call is a `pcall`: an index key of the wrong
-- type never fails the caller (whose job data matters more); a rebuild repairs the index.
-- The ZREM gates every decrement, so forgetting a job twice counts it once.
local function triage_forget_from(fp, id, queue)
  local P = 'retryguard:triage:v1:'
  local g = P .. 'group:' .. fp
  if redis.pcall('ZREM', g .. ':jobs:' .. queue, id) ~= 1 then return 0 end
  if redis.pcall('HGET', P .. 'jobs', id) == fp then redis.pcall('HDEL', P .. 'jobs', id) end
  local ft = redis.pcall('HGET', g, 'failure_type')
  if type(ft) ~= 'string' then ft = '' end
  local left = redis.pcall('HINCRBY', g, 'count', -1)
  if redis.pcall('HINCRBY', g, 'q:' .. queue, -1) == 0 then redis.pcall('HDEL', g, 'q:' .. queue) end
  local cf = queue .. '\t' .. ft
  if redis.pcall('HINCRBY', P .. 'counts', cf, -1) == 0 then redis.pcall('HDEL', P .. 'counts', cf) end
  redis.pcall('LREM', g .. ':sample', 0, id)
  if type(left) == 'number' and left <= 0 then
    redis.pcall('ZREM', P .. 'groups', fp)
    redis.pcall('ZREM', P .. 'groups:last', fp)
    -- A cause with no failed job left is kept a week, for its history.
    for _, k in ipairs({g, g .. ':hours', g .. ':example', g .. ':sample'}) do
      redis.pcall('EXPIRE', k, 604800)
    end
  else
    redis.pcall('ZINCRBY', P .. 'groups', -1, fp)
  end
  return 1
end

local function triage_forget(id, queue)
  local fp = redis.pcall('HGET', 'retryguard:triage:v1:jobs', id)
  if type(fp) ~= 'string' then return 0 end
  return triage_forget_from(fp, id, queue)
end

