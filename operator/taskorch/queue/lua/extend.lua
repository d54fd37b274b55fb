-- extend(leases), the heartbeat. ARGV lease_ms, 5 limits (common.lua read_limits), then
-- (id, fence, progress) triples; progress is the handler's latest report as JSON, or '' for none.
-- Written only while the lease is ours, so a late heartbeat never touches a task that finished
-- or moved to another worker. Also reaps the queue's expired leases (lost workers).
-- Returns {lost ids (fence or state no longer ours), ids whose cancel was requested}.
local lease_ms = tonumber(ARGV[1])
local limits = read_limits(2)
local lost, cancels = {}, {}
for i = 7, #ARGV, 3 do
  local id, fence, progress = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local cur = redis.call('HMGET', key.task(id), 'state', 'fence', 'cancel')
  if cur[1] ~= 'active' or cur[2] ~= fence then
    lost[#lost + 1] = id
  else
    redis.call('ZADD', key.active, 'XX', now + lease_ms, id)
    if progress ~= '' then redis.call('HSET', key.task(id), 'progress', progress) end
    if cur[3] == '1' then cancels[#cancels + 1] = id end
  end
end
reap(limits)
return {lost, cancels}
