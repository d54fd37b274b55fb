-- set_paused(flag): pause ('1') or resume ('0') the queue in its config hash; a resume wakes a
-- worker at once.
if ARGV[1] == '1' then
  redis.call('HSET', key.config, 'paused', '1')
else
  redis.call('HDEL', key.config, 'paused')
  wake_if_ready()
end
return 1
