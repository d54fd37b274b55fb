"""What a container task's Job (and its pod) says about the attempt: still running, succeeded
with a result, or failed with an error named for what Kubernetes reports (OOMKilled,
DeadlineExceeded, ImagePullBackOff...). Pure: Job and Pod JSON in, a verdict out.

The errors are the attempt's: the retry policy sees them by class name (`retry.noRetryOn:
[OOMKilled]`), and the Task's lastError shows their type, reason and, as its traceback, the
container's termination message (its last log lines when it failed: the Job's pods use
FallbackToLogsOnError)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import Any

from taskorch.api.reasons import Reason
from taskorch.errors import AttemptFailed, NonRetryable

MESSAGE_TAIL = 2000
# Waiting reasons that end the attempt once they have lasted the pull grace: the kubelet would
# retry them forever, while the Task's retry policy is the one that should decide.
STUCK_REASONS = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError", "CreateContainerError"}
)
# Waiting reasons no wait can fix.
HOPELESS_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})


class ContainerError(AttemptFailed):
    """A failed container attempt; retried per the task's policy."""

    reason = Reason.ContainerFailed


class ContainerFailed(ContainerError):
    """The container exited with a code other than 0."""


class OOMKilled(ContainerFailed):
    reason = Reason.OOMKilled


class DeadlineExceeded(ContainerError, TimeoutError):
    """The Job ran past activeDeadlineSeconds (the task's timeout)."""

    reason = Reason.DeadlineExceeded


class ImagePullBackOff(ContainerError):
    reason = Reason.ImagePullBackOff


class ContainerConfigError(ContainerError):
    """The pod could not start its container (a missing Secret or ConfigMap key, ...)."""

    reason = Reason.ContainerConfigError


class PodEvicted(ContainerError):
    reason = Reason.PodEvicted


class JobFailed(ContainerError):
    """The Job failed for a reason of its own (no pod to tell more)."""

    reason = Reason.JobFailed


class JobDeleted(ContainerError):
    """Someone deleted the attempt's Job while it ran."""

    reason = Reason.JobDeleted


@dataclass(frozen=True)
class Running:
    waiting: str | None = None  # a STUCK_REASONS reason the pod waits in, with its message
    message: str = ""


@dataclass(frozen=True)
class Succeeded:
    result: dict[str, Any]


Verdict = Running | Succeeded | Exception


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return dict(c)
    return None


def verdict(job: dict[str, Any] | None, pods: list[dict[str, Any]]) -> Verdict:
    """The attempt's state from its Job and the Job's pods (newest last)."""
    if job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
        return JobDeleted("the attempt's Job was deleted while it ran")
    name = job["metadata"]["name"]
    pod = pods[-1] if pods else None
    terminated = _terminated(pod)
    if condition(job, "Complete") or condition(job, "SuccessCriteriaMet"):
        return Succeeded(_result(name, pod, terminated))
    failed = condition(job, "Failed") or condition(job, "FailureTarget")
    if failed:
        reason = failed.get("reason") or ""
        if reason == "DeadlineExceeded":
            return DeadlineExceeded(
                f"Job {name} ran past its activeDeadlineSeconds (the task's timeout)",
                _message(terminated),
            )
        return _pod_failure(name, pod, terminated) or JobFailed(
            f"Job {name} failed: {reason}: {failed.get('message', '')}".rstrip(": ")
        )
    waiting = _waiting(pod)
    if waiting is not None:
        why, message = waiting
        if why in HOPELESS_REASONS:
            return NonRetryable(Reason.InvalidImage, f"{why}: {message}"[:1000])
        if why in STUCK_REASONS:
            return Running(why, message)
    return Running()


def stuck_error(job_name: str, reason: str, message: str, seconds: float) -> ContainerError:
    """The error of an attempt whose pod waited in `reason` for the whole pull grace."""
    text = f"the pod of Job {job_name} waited {seconds:.0f}s in {reason}: {message}"[:1000]
    if reason in ("ImagePullBackOff", "ErrImagePull"):
        return ImagePullBackOff(text)
    return ContainerConfigError(text)


def _pod_failure(
    name: str, pod: dict[str, Any] | None, terminated: dict[str, Any] | None
) -> ContainerError | None:
    if pod is not None and (pod.get("status") or {}).get("reason") == "Evicted":
        return PodEvicted(f"the pod of Job {name} was evicted: {pod['status'].get('message', '')}")
    if terminated is None:
        return None
    code = terminated.get("exitCode")
    details = _message(terminated)
    if terminated.get("reason") == "OOMKilled":
        return OOMKilled(
            f"the container of Job {name} ran out of memory (exit code {code})", details
        )
    first_line = (details or "").strip().splitlines()[-1:] or [""]
    return ContainerFailed(
        f"exit code {code}" + (f": {first_line[0][:300]}" if first_line[0] else ""), details
    )


def _result(
    name: str, pod: dict[str, Any] | None, terminated: dict[str, Any] | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"job": name, "exitCode": 0}
    if pod is not None:
        result["pod"] = pod["metadata"]["name"]
    message = _message(terminated)
    if message:
        result["message"] = message
        with contextlib.suppress(ValueError):  # plain text: the message is the result
            result["output"] = json.loads(message)
    return result


def _statuses(pod: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pod is None:
        return []
    return list((pod.get("status") or {}).get("containerStatuses") or [])


def _terminated(pod: dict[str, Any] | None) -> dict[str, Any] | None:
    for s in _statuses(pod):
        state = (s.get("state") or {}).get("terminated") or (s.get("lastState") or {}).get(
            "terminated"
        )
        if state:
            return dict(state)
    return None


def _waiting(pod: dict[str, Any] | None) -> tuple[str, str] | None:
    for s in _statuses(pod):
        state = (s.get("state") or {}).get("waiting")
        if state and state.get("reason"):
            return str(state["reason"]), str(state.get("message") or "")
    return None


def _message(terminated: dict[str, Any] | None) -> str | None:
    if not terminated or not terminated.get("message"):
        return None
    return str(terminated["message"])[-MESSAGE_TAIL:]
