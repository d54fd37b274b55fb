-- delete(id): remove a task that has ended (succeeded, cancelled or dead) with its data.
-- Returns 1, or 0 when it has not ended or does not exist: a live task is cancelled, not deleted.
local id = ARGV[1]
local state = redis.call('HGET', key.task(id), 'state')
if state ~= 'succeeded' and state ~= 'cancelled' and state ~= 'dead' then return 0 end
redis.call('ZREM', key.dead, id)
redis.call('ZREM', key.done, id)
redis.call('DEL', key.task(id))
return 1
