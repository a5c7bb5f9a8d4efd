-- Delete one failed RQ job, as RQ 2.12's `job.delete()` does, exactly once, in one atomic
-- step with its audit record.
--
-- It first re-checks that the job is still the failure the decision was made about, then
-- deletes what `job.delete()` deletes (and its results stream, which RQ leaves: see
-- docs/rq-layout.md), and appends the `deleted` record to the outbox in the same step.
--
-- KEYS[1] rq:failed:<queue>          the failed registry (ZSET)
-- KEYS[2] rq:job:<id>                the job hash
-- KEYS[3] rq:results:<id>            the job's results stream
-- KEYS[4] rq:queue:<queue>           the queue list
-- KEYS[5] rq:job:<id>:dependents     the job's dependents set
-- KEYS[6] rq:executions:<id>         the job's execution registry (ZSET)
-- KEYS[7] retryguard:audit:outbox    the audit outbox (stream)
-- KEYS[8] retryguard:job:<id>        retryguard's retry state (hash; deleted with the job)
-- ARGV[1] job id            ARGV[2] origin queue name   ARGV[3] newest results entry id seen ('' if none)
-- ARGV[4] the job's created_at as read                   ARGV[5] '1' to delete its dependents too
-- ARGV[6] the reason (the record's error_message)        ARGV[7] n: how many ARGV entries follow
-- ARGV[8 .. 7+n]   the job's audit record without decision/success/error_message: field, value, ...
-- ARGV[8+n ..]     the base of a dependent's record (actor, operation, reason, ...): field, value, ...
-- Each record enters the outbox as one field `r`, a JSON object of strings (docs/audit.md,
-- "The outbox entry").
--
-- Keys it finds in the data (the job's group `rq:group:<group_id>`, `rq:wip:<queue>`,
-- `rq:execution:<id>:<execution>`, RQ's `rq:job::<id>:dependencies`, and a dependent's keys)
-- are not in KEYS: RQ runs on one Redis, never a cluster.
--
-- Returns {outcome, detail}: 'deleted' (dependents deleted), 'already_requeued',
-- 'stale_decision' (why), 'not_found'. The detail is printable ASCII only. Every outcome but a
-- refusal because the outbox itself holds the wrong type appends exactly one record for the
-- job (and one `deleted` record per dependent deleted), in this same step.
--
-- Every key's type is checked before anything is written: Redis keeps what a script wrote
-- before an error, so a key of the wrong type is a refusal that changed nothing.

local job_id, origin, seen_result, created_at = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n_record = tonumber(ARGV[7]) or 0

local function escape(value)
  local s = tostring(value)
  local cut = ''
  if #s > 200 then
    s, cut = string.sub(s, 1, 200), '...'
  end
  s = string.gsub(s, '[%c\128-\255\\]', function(c)
    if c == '\\' then return '\\\\' end
    return string.format('\\x%02x', string.byte(c))
  end)
  return s .. cut
end

-- Why `key` cannot be used as `expected`, or nil when its type is right ('none' passes).
local function wrong_type_of(key, expected)
  local found = redis.call('TYPE', key)['ok']
  if found == 'none' or found == expected then return nil end
  return escape(key) .. ' holds a ' .. escape(found) .. ', not a ' .. expected ..
    ': nothing was changed'
end

-- Appends one record: `record` (a table of strings), then the pairs ARGV[from..to].
local function append(record, from, to)
  for i = from, to - 1, 2 do record[ARGV[i]] = ARGV[i + 1] end
  redis.call('XADD', KEYS[7], '*', 'r', cjson.encode(record))
end

local function audit(decision, success, message)
  append({decision = tostring(decision), success = tostring(success),
    error_message = tostring(message)}, 8, 7 + n_record)
end

local function refuse(outcome, why)
  audit(outcome, 'false', why)
  return {outcome, why}
end

-- The outbox first: every outcome below writes it.
local damaged = wrong_type_of(KEYS[7], 'stream')
if damaged then return {'stale_decision', damaged} end

if redis.call('TYPE', KEYS[2])['ok'] == 'none' then
  -- A dangling registry member: its job hash expired or was deleted.
  if redis.call('TYPE', KEYS[1])['ok'] == 'zset' then
    redis.call('ZREM', KEYS[1], job_id)
    triage_forget(job_id, origin)
  end
  return refuse('not_found', 'job hash is gone')
end
local EXPECTED = {[1] = 'zset', [2] = 'hash', [3] = 'stream', [4] = 'list', [5] = 'set',
  [6] = 'zset', [8] = 'hash'}
for i = 1, 8 do
  if EXPECTED[i] then
    damaged = wrong_type_of(KEYS[i], EXPECTED[i])
    if damaged then return refuse('stale_decision', damaged) end
  end
end
if not redis.call('ZSCORE', KEYS[1], job_id) then
  return refuse('already_requeued', 'not in the failed registry')
end
local fields = redis.call('HMGET', KEYS[2], 'status', 'origin', 'created_at', 'group_id')
if fields[2] ~= origin then
  return refuse('stale_decision', 'origin changed')
end
if fields[1] ~= 'failed' and fields[1] ~= 'stopped' then
  return refuse('stale_decision', 'status is ' .. escape(fields[1]))
end
if (fields[3] or '') ~= created_at then
  return refuse('stale_decision', 'created_at changed: another job with the same id')
end
local newest = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
local newest_id = ''
if #newest > 0 then newest_id = newest[1][1] end
if newest_id ~= seen_result then
  return refuse('stale_decision', 'the job has a newer result: it ran again since the decision')
end

-- The plan: every key a write below touches, its type checked before any write.
-- One job's removal from its registries, executions and group (RQ's `_remove_from_registries`,
-- `execution_registry.delete`, `Group.delete_job`).
local function plan_job(id, queue, status, group_id, registry)
  local p = {id = id, queue = queue, status = status, registry = registry,
    executions = 'rq:executions:' .. id, wip = 'rq:wip:' .. queue}
  if group_id and group_id ~= '' then p.group = 'rq:group:' .. group_id end
  local checks = {{p.executions, 'zset'}, {p.wip, 'zset'}}
  if p.registry then checks[#checks + 1] = {p.registry, 'zset'} end
  if p.group then checks[#checks + 1] = {p.group, 'set'} end
  for _, c in ipairs(checks) do
    local why = wrong_type_of(c[1], c[2])
    if why then return nil, why end
  end
  p.execution_ids = redis.call('ZRANGE', p.executions, 0, -1)
  return p
end

local function remove_job(p)
  if p.registry then
    redis.call('ZREM', p.registry, p.id)
    if p.status == 'failed' or p.status == 'stopped' then triage_forget(p.id, p.queue) end
  end
  for _, e in ipairs(p.execution_ids) do
    redis.call('DEL', 'rq:execution:' .. p.id .. ':' .. e)
    redis.call('ZREM', p.wip, p.id .. ':' .. e)
  end
  redis.call('DEL', p.executions)
  if p.group then redis.call('SREM', p.group, p.id) end
  -- The hash, its dependents set, RQ's dependencies set (RQ spells it `rq:job::<id>:…`), and
  -- the results stream RQ would leave behind.
  redis.call('DEL', 'rq:job:' .. p.id, 'rq:job:' .. p.id .. ':dependents',
    'rq:job::' .. p.id .. ':dependencies', 'rq:results:' .. p.id)
end

local main, why = plan_job(job_id, origin, fields[1], fields[4], KEYS[1])
if not main then return refuse('stale_decision', why) end

-- A dependent's registry by its status (RQ 2.12's `_remove_from_registries`); a dependent is
-- never taken out of its queue list (`remove_from_queue=False`, as RQ does).
local REGISTRY = {finished = 'finished', deferred = 'deferred', scheduled = 'scheduled',
  failed = 'failed', stopped = 'failed', canceled = 'canceled'}
local dependents = {}
if ARGV[5] == '1' then
  for _, dep in ipairs(redis.call('SMEMBERS', KEYS[5])) do
    local key = 'rq:job:' .. dep
    local t = redis.call('TYPE', key)['ok']
    if t == 'hash' then
      local d = redis.call('HMGET', key, 'status', 'origin', 'group_id')
      local queue = d[2] or ''
      local registry = nil
      if REGISTRY[d[1] or ''] then registry = 'rq:' .. REGISTRY[d[1]] .. ':' .. queue end
      local p, dep_why = plan_job(dep, queue, d[1] or '', d[3], registry)
      if not p then return refuse('stale_decision', 'dependent ' .. escape(dep) .. ': ' .. dep_why) end
      dependents[#dependents + 1] = p
    elseif t ~= 'none' then
      return refuse('stale_decision', 'dependent ' .. escape(dep) .. ': ' ..
        wrong_type_of(key, 'hash'))
    end
  end
end

-- Writes: nothing above wrote anything (but a `not_found`'s pruning).
redis.call('LREM', KEYS[4], 1, job_id)
remove_job(main)
redis.call('DEL', KEYS[8])
audit('deleted', 'true', ARGV[6])
for _, p in ipairs(dependents) do
  remove_job(p)
  append({decision = 'deleted', success = 'true', error_message =
    'a dependent of ' .. escape(job_id) .. ', deleted with it: ' .. ARGV[6],
    job_id = tostring(p.id), queue = tostring(p.queue)}, 8 + n_record, #ARGV)
end
return {'deleted', tostring(#dependents)}
