"""Command tasks (`spec.command`): an argv run as a child process of a warm worker, for workers
started with `--allow-commands` only, and only for executables on that allow-list. A worker
without it has no handler for COMMAND_TYPE and hands such tasks back like any unknown type.

The command runs in a session (process group) of its own, without a shell, with an environment
of its own: PATH, HOME, LANG and TZ from the worker, TASKORCH_TASK_ID and the task's `env`, never
the worker's secrets (its Redis password). A timeout, a cancel or a drain's release kill the
whole group; so does the command's end (no background child outlives its task). stdout and
stderr are read to the end, keeping the last OUTPUT_TAIL bytes of each."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from pydantic import BaseModel, Field, field_validator

from taskorch.api.reasons import Reason
from taskorch.api.task import COMMAND_TYPE
from taskorch.errors import NonRetryable
from taskorch.worker.app import App, Context

OUTPUT_TAIL = 1536  # bytes of each stream kept in the result: both fit a Task's 4 KiB status
READ_CHUNK = 64 * 1024
TERM_GRACE_SECONDS = 0.5  # between SIGTERM and SIGKILL of the group on a cancel or timeout
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class CommandPayload(BaseModel):
    argv: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = Field(default=None, alias="workingDir")

    @field_validator("argv", mode="before")
    @classmethod
    def _upstream_values_as_text(cls, argv: Any) -> Any:
        # A workflow step's `{{ steps.x.result.count }}` may render to a number or an object.
        if isinstance(argv, list):
            return [v if isinstance(v, str) else json.dumps(v) for v in argv]
        return argv


class CommandFailed(RuntimeError):
    """The command exited with a code other than 0 (a failed attempt, retried per policy)."""

    def __init__(self, code: int, stderr: str) -> None:
        self.code = code
        tail = stderr.strip()[-500:]
        super().__init__(f"exit code {code}" + (f"; stderr: {tail}" if tail else ""))


def parse_allow_list(value: str) -> frozenset[str] | None:
    """`--allow-commands`: comma-separated executables, or `*` for any (None)."""
    names = frozenset(v.strip() for v in value.split(",") if v.strip())
    if not names:
        raise ValueError(
            "--allow-commands needs executables (e.g. echo,sleep,/usr/bin/ffmpeg) or *"
        )
    return None if "*" in names else names


def allowed(executable: str, allow: frozenset[str] | None) -> bool:
    """A name matches a bare name (found on PATH); a path matches only that exact path, so
    `echo` on the list never admits `/tmp/anything/echo`."""
    return allow is None or executable in allow


def command_app(allow: frozenset[str] | None) -> App:
    """An app with the built-in command handler, for `App.include`."""
    app = App()

    @app.handler(COMMAND_TYPE)
    async def run_command(ctx: Context, command: CommandPayload) -> dict[str, Any]:
        return await run(ctx, command, allow)

    return app


async def run(
    ctx: Context, command: CommandPayload, allow: frozenset[str] | None
) -> dict[str, Any]:
    executable = command.argv[0]
    if not allowed(executable, allow):
        listed = "any" if allow is None else ", ".join(sorted(allow))
        raise NonRetryable(
            Reason.CommandNotAllowed,
            f"{executable!r} is not in this worker's --allow-commands ({listed})",
        )
    env = {k: v for k in INHERITED if (v := os.environ.get(k)) is not None}
    env |= {"TASKORCH_TASK_ID": ctx.task_id, **command.env}
    try:
        proc = await asyncio.create_subprocess_exec(
            *command.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=command.working_dir,
            start_new_session=True,  # its own process group: killed as one
        )
    except (FileNotFoundError, NotADirectoryError, PermissionError) as e:
        raise NonRetryable(Reason.CommandNotFound, f"cannot run {executable!r}: {e}") from e
    assert proc.stdout is not None and proc.stderr is not None
    readers = asyncio.gather(_tail(proc.stdout), _tail(proc.stderr))
    try:
        code = await proc.wait()
    except BaseException:  # a timeout, a cancel or a drain's release
        await _stop_group(proc)
        readers.cancel()
        with contextlib.suppress(BaseException):
            await readers
        raise
    _kill_group(proc.pid, signal.SIGKILL)  # what it left behind in the background
    stdout, stderr = await readers
    if code != 0:
        raise CommandFailed(code, stderr)
    return {"exitCode": code, "stdout": stdout, "stderr": stderr}


async def _tail(stream: asyncio.StreamReader) -> str:
    """Read the stream to its end (so the command never blocks on a full pipe), keeping only
    the last OUTPUT_TAIL bytes."""
    kept = bytearray()
    while chunk := await stream.read(READ_CHUNK):
        kept += chunk
        del kept[:-OUTPUT_TAIL]
    return kept.decode(errors="replace")


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the command's group, then SIGKILL it after TERM_GRACE_SECONDS: the whole group,
    so `sh -c "a | b"` leaves nothing running."""
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), TERM_GRACE_SECONDS)
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(asyncio.shield(proc.wait()), 1.0)
