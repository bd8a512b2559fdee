-- Apply one model's window update atomically with its offset checkpoints.
-- Contract: see detectors/window_store.py (WindowStore.apply) and stores/redis_store.py (argument
-- layout). Either everything below is written, or (a partition's checkpoint is already at or past
-- the update's first offset) nothing is, and the current checkpoints are returned.
--
-- KEYS[1] checkpoints hash, KEYS[2] totals hash, KEYS[3] meta hash,
-- KEYS[4..] pairs of (bucket hash, rollup hash), one pair per bucket of the update, then M label
-- marker keys (duplicate labels: if any is set, nothing is written and status 3 is returned with
-- the checkpoints and the 1-based positions of the markers already set).
-- ARGV: partition count P, then P quadruples (partition, first offset, last offset, last offset the
-- caller knows applied or -1), newest event ms,
-- then per bucket pair: bucket expire-at ms, rollup expire-at ms, field count F, F (field, increment)
-- pairs; then total count T and T (field, increment) pairs; then M marker expire-at ms, then M.

local partition_count = tonumber(ARGV[1])
local checkpoints = {}
local status = 1
local position = 2
for p = 1, partition_count do
  local applied = redis.call('HGET', KEYS[1], ARGV[position])
  local last = -1
  if applied then last = tonumber(applied) end
  if last < tonumber(ARGV[position + 3]) then
    status = 2
  elseif status == 1 and last >= tonumber(ARGV[position + 1]) then
    status = 0
  end
  checkpoints[p] = applied or '-1'
  position = position + 4
end
if status ~= 1 then
  return {status, unpack(checkpoints)}
end

local marker_count = tonumber(ARGV[#ARGV])
local first_marker = #KEYS - marker_count
local marked = {3}
for p = 1, partition_count do marked[#marked + 1] = checkpoints[p] end
for m = 1, marker_count do
  if redis.call('EXISTS', KEYS[first_marker + m]) == 1 then marked[#marked + 1] = m end
end
if #marked > partition_count + 1 then
  return marked
end
for m = 1, marker_count do
  redis.call('SET', KEYS[first_marker + m], '1', 'PXAT', ARGV[#ARGV - marker_count - 1 + m])
end

position = 2
for p = 1, partition_count do
  redis.call('HSET', KEYS[1], ARGV[position], ARGV[position + 2])
  position = position + 4
end
local newest_event_ms = ARGV[position]
position = position + 1

for pair = 0, (first_marker - 3) / 2 - 1 do
  local bucket_key = KEYS[4 + 2 * pair]
  local rollup_key = KEYS[5 + 2 * pair]
  local bucket_expire_at_ms = ARGV[position]
  local rollup_expire_at_ms = ARGV[position + 1]
  local field_count = tonumber(ARGV[position + 2])
  position = position + 3
  for f = 1, field_count do
    redis.call('HINCRBY', bucket_key, ARGV[position], ARGV[position + 1])
    redis.call('HINCRBY', rollup_key, ARGV[position], ARGV[position + 1])
    position = position + 2
  end
  redis.call('PEXPIREAT', bucket_key, bucket_expire_at_ms)
  redis.call('PEXPIREAT', rollup_key, rollup_expire_at_ms)
end

local total_count = tonumber(ARGV[position])
position = position + 1
for t = 1, total_count do
  redis.call('HINCRBY', KEYS[2], ARGV[position], ARGV[position + 1])
  position = position + 2
end

if tonumber(newest_event_ms) > tonumber(redis.call('HGET', KEYS[3], 'newest_event_ms') or '0') then
  redis.call('HSET', KEYS[3], 'newest_event_ms', newest_event_ms)
end
return {1}
