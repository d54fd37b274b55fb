"""ttlSecondsAfterFinished without a finalizer (kopf's timers would add one): a timer per
finished object, fed by watch events, that deletes it when due (retried with backoff, and only
if it is still the object with that UID), cancelled when the object leaves its terminal phase
(a Task requeued from the DLQ, a Workflow retried) or is deleted."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from taskorch.controller.kube import KubeAPI
from taskorch.controller.status import epoch_seconds

log = logging.getLogger("taskorch.expiry")
TTL_RETRY_FIRST_SECONDS = 1.0


class Expiries:
    def __init__(self, kube: KubeAPI, plural: str) -> None:
        self.kube = kube
        self.plural = plural
        self.timers: dict[str, asyncio.Task[None]] = {}

    def follow(self, body: dict[str, Any], finished: bool) -> None:
        """One watch event of the object: start its timer once it finished, stop it if not."""
        meta, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        uid = meta["uid"]
        if not finished:
            self.forget(uid)
            return
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is None or not status.get("completionTime") or uid in self.timers:
            return
        expires = epoch_seconds(status["completionTime"]) + int(ttl)
        self.timers[uid] = asyncio.create_task(
            self._expire(meta["namespace"], meta["name"], uid, expires), name=f"ttl-{uid}"
        )

    def forget(self, uid: str) -> None:
        timer = self.timers.pop(uid, None)
        if timer is not None:
            timer.cancel()

    async def _expire(self, namespace: str, name: str, uid: str, expires: float) -> None:
        try:
            await asyncio.sleep(max(0.0, expires - time.time()))
            backoff = TTL_RETRY_FIRST_SECONDS
            while True:
                try:
                    await self.kube.delete(self.plural, namespace, name, uid=uid)
                    return
                except Exception as e:
                    log.warning(
                        "TTL deletion of %s %s/%s failed (%s); retry in %.0fs",
                        self.plural,
                        namespace,
                        name,
                        e,
                        backoff,
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 60.0)
        finally:
            self.timers.pop(uid, None)
