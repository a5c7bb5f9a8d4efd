-- Replaces a stored policy's metadata if it is still what the caller read (compare-and-set),
-- and for a settings change (name, description, WASI, limits), in the same step: bumps the
-- bindings revision, appends the audit record (actor, before, after) to the outbox and
-- announces the new revision, so every instance rebuilds its table with the new settings
-- exactly as it does after a binding change. See registry/store.rs.
--
-- KEYS[1] retryguard:policy:<digest>:meta    the metadata (JSON)
-- KEYS[2] retryguard:bindings:revision       counter
-- KEYS[3] retryguard:audit:outbox            the audit outbox (stream)
-- ARGV[1] the metadata as the caller read it (JSON)
-- ARGV[2] the new metadata (JSON)
-- ARGV[3] the audit decision (policy_settings_changed); '' for a change that is not a
--         settings change (retire, restore): no revision, no audit record
-- ARGV[4] actor
-- ARGV[5] the digest
-- ARGV[6] the settings before and after, as the JSON members '"before":{…},"after":{…}'
-- ARGV[7] the pub/sub channel
-- ARGV[8] without ARGV[3]: the announcement to publish ('' = none)
-- Returns the new revision; 0 without ARGV[3]; -2 when the metadata is not ARGV[1] any more.
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return -2
end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] == '' then
  if ARGV[8] ~= '' then
    redis.call('PUBLISH', ARGV[7], ARGV[8])
  end
  return 0
end
local rev = redis.call('INCR', KEYS[2])
-- The record is one field `r`, a JSON object of strings (docs/audit.md, "The outbox entry").
redis.call('XADD', KEYS[3], '*', 'r', cjson.encode({
  decision = ARGV[3],
  user_or_system = ARGV[4],
  policy_digest = ARGV[5],
  attributes = '{"revision":' .. rev .. ',"policy":"' .. ARGV[5] .. '",' .. ARGV[6] .. '}'}))
redis.call('PUBLISH', ARGV[7],
  '{"kind":"policy_settings","revision":' .. rev .. ',"digest":"' .. ARGV[5] .. '"}')
return rev
