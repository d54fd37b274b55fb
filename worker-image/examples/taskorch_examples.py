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


# The seed's image pipeline as workflow steps (examples/workflow.yaml): each passes a path on.


class Download(BaseModel):
    image_url: str = Field(min_length=1)


@app.handler("download_image")
async def download_image(ctx: taskorch.Context, job: Download) -> dict[str, object]:
    await asyncio.sleep(0.01)  # stands in for the download
    name = job.image_url.rstrip("/").rsplit("/", 1)[-1] or "image"
    return {"path": f"/data/{ctx.task_id}/{name}"}


class Resize(BaseModel):
    path: str = Field(min_length=1)
    width: int = Field(default=256, gt=0, le=8192)


@app.handler("resize_image")
async def resize_image(ctx: taskorch.Context, job: Resize) -> dict[str, object]:
    await asyncio.sleep(0.01)
    return {"path": f"{job.path}.{job.width}w.jpg", "width": job.width}


class Upload(BaseModel):
    path: str = Field(min_length=1)


@app.handler("upload_image")
async def upload_image(ctx: taskorch.Context, job: Upload) -> dict[str, object]:
    await asyncio.sleep(0.01)
    return {"url": f"s3://thumbnails/{job.path.rsplit('/', 1)[-1]}", "uploaded": job.path}


# Recurring work (examples/schedule.yaml) on a queue with a declared policy
# (examples/taskqueue.yaml).


class Report(BaseModel):
    type: str = Field(default="daily", min_length=1)


@app.handler("report")
async def report(ctx: taskorch.Context, job: Report) -> dict[str, object]:
    await asyncio.sleep(0.01)  # stands in for the real query
    return {"report": job.type, "task": ctx.task_id}


class Email(BaseModel):
    to: str = Field(min_length=3)
    subject: str = ""


@app.handler("send_email")
async def send_email(ctx: taskorch.Context, job: Email) -> dict[str, object]:
    await asyncio.sleep(0.005)  # stands in for the SMTP call
    return {"sent": job.to}
