"""GitOps health from the Succeeded condition: the `Ready`, `Reconciling` and `Stalled`
conditions that Flux's kstatus reads (abnormal-true `Reconciling` / `Stalled`, `Ready`
normal-true), so `flux`/`kstatus` and Argo CD's health checks (charts/taskorch/argocd/) read a
running Task or Workflow as in progress, a succeeded one as ready and a failed one as failed.
Pure: conditions in, conditions out."""

from __future__ import annotations

from taskorch.api.base import Condition

# Not run, by design: the task holding the key did. Healthy, not a failure to alert on.
HEALTHY_WITHOUT_SUCCESS = {"Duplicate"}


def with_health(conditions: list[Condition]) -> list[Condition]:
    """`conditions` plus Ready and Reconciling-or-Stalled, derived from its Succeeded one."""
    succeeded = next((c for c in conditions if c.type == "Succeeded"), None)
    if succeeded is None:
        return conditions

    def derived(type_: str, status: str) -> Condition:
        return succeeded.model_copy(update={"type": type_, "status": status})

    if succeeded.status == "True" or succeeded.reason in HEALTHY_WITHOUT_SUCCESS:
        extra = [derived("Ready", "True")]
    elif succeeded.status == "False":
        extra = [derived("Ready", "False"), derived("Stalled", "True")]
    else:
        extra = [derived("Ready", "False"), derived("Reconciling", "True")]
    return [*conditions, *extra]
