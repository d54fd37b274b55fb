-- configure(policy): the queue's policy from its TaskQueue, replacing the whole config hash
-- (a field the TaskQueue no longer sets falls back to its default). ARGV: field, value pairs;
-- none clears it. Wakes a worker, so a resume or a raised limit takes effect at once.
redis.call('DEL', key.config)
if #ARGV > 0 then redis.call('HSET', key.config, unpack(ARGV)) end
wake_if_ready()
return 1
