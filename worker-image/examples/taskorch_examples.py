"""Example handlers: the seed's image pipeline steps. `taskorch worker --app taskorch_examples:app`."""

from __future__ import annotations

import asyncio
import hashlib

from pydantic import BaseModel, Field

import taskorch

app = taskorch.App()


class ImageJob(BaseModel):
    image_url: str = Field(min_length=1)
    width: int = Field(default=256, gt=0, le=8192)
    height: int = Field(default=256, gt=0, le=8192)


@app.handler("process_image", retry=taskorch.Retry(max_attempts=5, on=(TimeoutError,)))
async def process_image(ctx: taskorch.Context, job: ImageJob) -> dict[str, object]:
    ctx.progress({"step": "resize"})
    await asyncio.sleep(0.01)  # stands in for the real resize
    digest = hashlib.sha256(f"{job.image_url}:{job.width}x{job.height}".encode()).hexdigest()
    return {"thumbnail": f"{job.image_url}.{job.width}x{job.height}.jpg", "sha256": digest[:16]}


@app.handler("noop")
async def noop(ctx: taskorch.Context) -> None:
    return None
