-- purge(): delete every dead task of the queue with its data, atomically. Returns how many.
local ids = redis.call('ZRANGE', key.dead, 0, -1)
drop_dead(ids)
return #ids
