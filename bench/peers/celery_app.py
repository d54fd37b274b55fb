import redis
from celery import Celery

from bench.common import DONE_KEY, REDIS_URL

app = Celery("bench", broker=REDIS_URL)
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
_r = redis.Redis.from_url(REDIS_URL)


@app.task(name="noop")
def noop(payload: object) -> None:
    _r.incr(DONE_KEY)
