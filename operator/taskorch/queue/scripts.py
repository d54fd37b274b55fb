"""The Lua scripts of DESIGN §5, each one atomic round trip, with common.lua prepended."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

from redis.commands.core import AsyncScript

NAMES = (
    "enqueue",
    "settle_claim",
    "extend",
    "cancel",
    "requeue",
    "purge",
    "delete",
    "configure",
    "set_paused",
)


@cache
def source(name: str) -> str:
    lua = files("taskorch.queue") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """Registered scripts for one client; EVALSHA with a transparent reload on NOSCRIPT."""

    def __init__(self, client: Any) -> None:
        self.enqueue: AsyncScript = client.register_script(source("enqueue"))
        self.settle_claim: AsyncScript = client.register_script(source("settle_claim"))
        self.extend: AsyncScript = client.register_script(source("extend"))
        self.cancel: AsyncScript = client.register_script(source("cancel"))
        self.requeue: AsyncScript = client.register_script(source("requeue"))
        self.purge: AsyncScript = client.register_script(source("purge"))
        self.delete: AsyncScript = client.register_script(source("delete"))
        self.configure: AsyncScript = client.register_script(source("configure"))
        self.set_paused: AsyncScript = client.register_script(source("set_paused"))
