"""One place for each contract: the key names of queue/keys.py and their twin in common.lua
are the same, and the reasons the scripts write are all in api/reasons.py."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import redis.asyncio as aioredis

from taskorch.api.reasons import Reason
from taskorch.queue import keys
from taskorch.queue.scripts import NAMES, source

NS, Q = "team-k", "q.1"

PROBE = """
local out = {}
for name, value in pairs(key) do
  if type(value) == 'string' then out[name] = value end
end
out.task = key.task('ID')
out.ready = key.ready(7)
out.unique = key.unique('K')
out.ck_waiting = key.ck_waiting('C')
out.ck_admitted = key.ck_admitted('C')
return cjson.encode(out)
"""


async def test_lua_builds_every_key_exactly_as_keys_py(aredis: aioredis.Redis) -> None:
    lua = source("enqueue").split("\n-- enqueue(batch)")[0]  # common.lua alone
    reply = await aredis.eval(lua + PROBE, 1, keys.prefix(NS, Q))
    expected = {name: getattr(keys, name)(NS, Q) for name in keys.FIXED}
    expected |= {
        "task": keys.task(NS, Q, "ID"),
        "ready": keys.ready(NS, Q, 7),
        "unique": keys.unique(NS, Q, "K"),
        "ck_waiting": keys.ck_waiting(NS, Q, "C"),
        "ck_admitted": keys.ck_admitted(NS, Q, "C"),
    }
    assert json.loads(reply) == expected


def test_scripts_build_keys_only_through_the_key_table() -> None:
    lua = files("taskorch.queue") / "lua"
    for name in (*NAMES, "common"):
        text = (lua / f"{name}.lua").read_text()
        if name == "common":  # past the key table, which is where keys are built
            text = text.split("local EVENTS_MAXLEN")[1]
        assert "prefix .." not in text, f"{name}.lua builds a key by hand"


def test_scripts_write_only_reasons_users_can_look_up() -> None:
    lua = files("taskorch.queue") / "lua"
    written: set[str] = set()
    for name in (*NAMES, "common"):
        text = (lua / f"{name}.lua").read_text()
        for literal, via_helper in re.findall(r"reason = '(\w+)'|with_reason\(\w+, '(\w+)'", text):
            written.add(literal or via_helper)
    assert {"LostWorkerLimit", "DeadlineExceeded", "MaxAttemptsExceeded"} <= written
    assert written <= {r.value for r in Reason}, written - {r.value for r in Reason}
