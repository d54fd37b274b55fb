import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from bench.common import DONE_KEY, REDIS_URL

dramatiq.set_broker(RedisBroker(url=REDIS_URL))
_r = redis.Redis.from_url(REDIS_URL)


@dramatiq.actor(max_retries=0)
def noop(payload: object) -> None:
    _r.incr(DONE_KEY)
