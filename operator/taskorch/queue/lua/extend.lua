-- extend(leases): ARGV now_ms, lease_ms, then (id, fence, progress) triples; progress is the
-- handler's latest report as JSON, or '' for none. Written only while the lease is ours, so a
-- late heartbeat never touches a task that finished or moved to another worker.
-- Returns {lost ids (fence or state no longer ours), ids whose cancel was requested}.
local now, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local lost, cancels = {}, {}
for i = 3, #ARGV, 3 do
  local id, fence, progress = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HMGET', tkey(id), 'state', 'fence', 'cancel')
  if cur[1] ~= 'active' or cur[2] ~= fence then
    lost[#lost + 1] = id
  else
    redis.call('ZADD', k('active'), 'XX', now + lease_ms, id)
    if progress ~= '' then redis.call('HSET', tkey(id), 'progress', progress) end
    if cur[3] == '1' then cancels[#cancels + 1] = id end
  end
end
return {lost, cancels}
