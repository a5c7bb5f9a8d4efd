-- Sets or removes one binding, atomically with everything that must change with it:
-- the revision, the pattern's history, the audit record (actor, before, after), the
-- announcement. See registry/store.rs.
--
-- KEYS[1] retryguard:bindings                 HASH pattern -> binding JSON
-- KEYS[2] retryguard:bindings:revision        counter
-- KEYS[3] retryguard:bindings:history:<pat>   LIST of earlier states, newest first
-- KEYS[4] retryguard:audit:outbox             the audit outbox (stream)
-- ARGV[1] pattern
-- ARGV[2] the new binding as JSON ('' removes the binding); its `revision` is set here
-- ARGV[3] the audit decision: binding_set | binding_deleted | binding_rolled_back |
--         binding_promoted
-- ARGV[4] actor
-- ARGV[5] '1': only when the pattern is unbound (seeding: no audit record), else '0'
-- ARGV[6] history entries kept
-- ARGV[7] the pub/sub channel
-- ARGV[8] expected current revision ('' = any)
-- Returns the new revision; -1 when ARGV[5] found a binding; -2 when ARGV[8] did not match.
local before = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[5] == '1' and before then
  return -1
end
if ARGV[8] ~= '' then
  local current = tonumber(redis.call('GET', KEYS[2]) or '0')
  if current ~= tonumber(ARGV[8]) then
    return -2
  end
end
local rev = redis.call('INCR', KEYS[2])
local after = nil
local digest, shadow, params = '', '', '{}'
if ARGV[2] ~= '' then
  local b = cjson.decode(ARGV[2])
  b.revision = rev
  after = cjson.encode(b)
  redis.call('HSET', KEYS[1], ARGV[1], after)
  digest = b.policy
  if type(b.shadow) == 'table' then
    shadow = b.shadow.policy
  end
  params = cjson.encode(b.params or {})
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('LPUSH', KEYS[3], before or 'null')
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
-- Seeding `*` from the config at the first start is the initial state, not a change anyone
-- made: no audit record (the binding itself says `changed_by: system`, revision 1).
-- The record is one field `r`, a JSON object of strings (docs/audit.md, "The outbox entry").
if ARGV[5] ~= '1' then
redis.call('XADD', KEYS[4], '*', 'r', cjson.encode({
  decision = ARGV[3],
  user_or_system = ARGV[4],
  job_type = ARGV[1],
  policy_digest = tostring(digest or ''),
  shadow_policy_digest = tostring(shadow or ''),
  params = params,
  attributes = '{"revision":' .. rev .. ',"before":' .. (before or 'null') .. ',"after":' .. (after or 'null') .. '}'}))
end
redis.call('PUBLISH', ARGV[7], '{"kind":"bindings","revision":' .. rev .. '}')
return rev
