-- Apply one model's window update atomically with its offset checkpoints.
-- Contract: see detectors/window_store.py (WindowStore.apply) and stores/redis_store.py (argument
-- layout). Either everything below is written, or (a partition's checkpoint is already at or past
-- the update's first offset) nothing is, and the current checkpoints are returned. Redis does not
-- undo a script that fails half-way: a key of the wrong type or a counter that is not a number
-- (both only by hand) keeps the writes made before it, the checkpoint included.
--
-- KEYS[1] checkpoints hash, KEYS[2] totals hash, KEYS[3] meta hash, KEYS[4] sequential states
-- hash, KEYS[5] sequential alarms hash,
-- KEYS[6..] pairs of (bucket hash, rollup hash), one pair per bucket of the update, then M label
-- marker keys (duplicate labels: if any is set, nothing is written and status 3 is returned with
-- the checkpoints and the 1-based positions of the markers already set).
-- ARGV: partition count P, then P quadruples (partition, first offset, last offset, last offset the
-- caller knows applied or -1),
-- then sequential write count W and W quadruples (partition, offset the stored state must cover
-- or -1 for none, offset the new state covers, new state): if a stored state covers another
-- offset, nothing is written and status 0 is returned, as for a checkpoint conflict;
-- then alarm count A, hold ms, and A septuples (series key|feature, first ms, last ms, count,
-- statistic, threshold, shift sd), each extending its feature's episode or starting the next
-- (detectors/window_store.py, AlarmEpisode.apply); then newest event ms,
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

local write_count = tonumber(ARGV[position])
local writes_at = position + 1
position = writes_at + 4 * write_count
local alarm_count = tonumber(ARGV[position])
local hold_ms = tonumber(ARGV[position + 1])
local alarms_at = position + 2
position = alarms_at + 7 * alarm_count
for w = 0, write_count - 1 do
  local at = writes_at + 4 * w
  local stored = redis.call('HGET', KEYS[4], 'offset:' .. ARGV[at])
  local stored_offset = -1
  if stored then stored_offset = tonumber(stored) end
  if stored_offset ~= tonumber(ARGV[at + 1]) then
    return {0, unpack(checkpoints)}
  end
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

local checkpoint_at = 2
for p = 1, partition_count do
  redis.call('HSET', KEYS[1], ARGV[checkpoint_at], ARGV[checkpoint_at + 2])
  checkpoint_at = checkpoint_at + 4
end
for w = 0, write_count - 1 do
  local at = writes_at + 4 * w
  redis.call('HSET', KEYS[4], 'offset:' .. ARGV[at], ARGV[at + 2], 'state:' .. ARGV[at], ARGV[at + 3])
end
for a = 0, alarm_count - 1 do
  local at = alarms_at + 7 * a
  local name = ARGV[at]
  local known = redis.call('HGET', KEYS[5], 'last|' .. name)
  if (not known) or tonumber(ARGV[at + 1]) - tonumber(known) > hold_ms then
    -- An episode stored before episodes were counted was at least one.
    local episodes = 1
    if known then episodes = tonumber(redis.call('HGET', KEYS[5], 'episodes|' .. name) or '1') + 1 end
    redis.call('HSET', KEYS[5], 'start|' .. name, ARGV[at + 1], 'statistic|' .. name, ARGV[at + 4],
      'threshold|' .. name, ARGV[at + 5], 'shift|' .. name, ARGV[at + 6], 'episodes|' .. name, episodes)
  elseif redis.call('HEXISTS', KEYS[5], 'shift|' .. name) == 1 then
    -- An episode stored before shifts were recorded keeps none until it ends.
    redis.call('HINCRBYFLOAT', KEYS[5], 'shift|' .. name, ARGV[at + 6])
  end
  if (not known) or tonumber(ARGV[at + 2]) > tonumber(known) then
    redis.call('HSET', KEYS[5], 'last|' .. name, ARGV[at + 2])
  end
  redis.call('HINCRBY', KEYS[5], 'count|' .. name, ARGV[at + 3])
end
local newest_event_ms = ARGV[position]
position = position + 1

for pair = 0, (first_marker - 5) / 2 - 1 do
  local bucket_key = KEYS[6 + 2 * pair]
  local rollup_key = KEYS[7 + 2 * pair]
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
