-- Stores an uploaded policy unless its digest is stored already: then nothing is written and
-- the stored metadata is returned, so uploading identical bytes again never rewrites a
-- stored policy's name, uploader or limits (changing those is set_policy_meta.lua's,
-- audited). See registry/store.rs.
--
-- KEYS[1] retryguard:policy:<digest>:meta    the metadata (JSON)
-- KEYS[2] retryguard:policy:<digest>:bytes   the component
-- KEYS[3] retryguard:policies                ZSET of digests by upload time
-- ARGV[1] the metadata as JSON
-- ARGV[2] the component's bytes
-- ARGV[3] the upload time, ms (the ZSET score)
-- ARGV[4] the digest
-- ARGV[5] the pub/sub channel
-- Returns nil when stored now; the stored metadata (JSON) when it was there already.
local existing = redis.call('GET', KEYS[1])
if existing then
  return existing
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], '{"kind":"policy","digest":"' .. ARGV[4] .. '"}')
return false
