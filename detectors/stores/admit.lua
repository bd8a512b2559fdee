-- Admit values into a bounded set: the first ARGV[1] distinct values ever seen are members.
-- KEYS[1] the set; ARGV[1] cap; ARGV[2..] values. Returns 1 (admitted) or 0 per value.
local cap = tonumber(ARGV[1])
local admitted = {}
for i = 2, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 1 then
    admitted[i - 1] = 1
  elseif redis.call('SCARD', KEYS[1]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
    admitted[i - 1] = 1
  else
    admitted[i - 1] = 0
  end
end
return admitted
