-- extend(leases): ARGV now_ms, lease_ms, then id, fence pairs.
-- Returns {lost ids (fence or state no longer ours), ids whose cancel was requested}.
local now, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local lost, cancels = {}, {}
for i = 3, #ARGV, 2 do
  local id, fence = ARGV[i], ARGV[i + 1]
  local cur = redis.call('HMGET', tkey(id), 'state', 'fence', 'cancel')
  if cur[1] ~= 'active' or cur[2] ~= fence then
    lost[#lost + 1] = id
  else
    redis.call('ZADD', k('active'), 'XX', now + lease_ms, id)
    if cur[3] == '1' then cancels[#cancels + 1] = id end
  end
end
return {lost, cancels}
