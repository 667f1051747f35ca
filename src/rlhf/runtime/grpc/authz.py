"""Who may call what: the role each method needs, and the audit log.

Roles, weakest first: `feedback` (production traffic and labellers: generate, chat,
classify, score, record feedback, read status), `operator` (also start and cancel
runs, register sources, prepare data, train, attack, promote and roll back), `admin`
(everything, including server reflection and any method not listed here). A method
missing from the table needs `admin`: a new RPC is closed until someone opens it.

Every decision is one structured log line on the `rlhf.audit` logger: who (token
name and role), which method, which resource (the request's pipeline / version /
name / run id), allowed or refused and why.
"""

from __future__ import annotations

import contextvars
import json
import logging
from typing import Any

from rlhf.runtime.grpc.auth import ROLES, Principal

audit_log = logging.getLogger("rlhf.audit")

_FEEDBACK, _OPERATOR = "feedback", "operator"

METHOD_ROLES: dict[str, str] = {
    # inference: what production systems and labellers call
    "rlhf.v1.InferenceService/Generate": _FEEDBACK,
    "rlhf.v1.InferenceService/Chat": _FEEDBACK,
    "rlhf.v1.InferenceService/Classify": _FEEDBACK,
    "rlhf.v1.InferenceService/Score": _FEEDBACK,
    "rlhf.v1.InferenceService/RecordFeedback": _FEEDBACK,
    # reading status and models
    "rlhf.v1.DataPrepService/GetDataset": _FEEDBACK,
    "rlhf.v1.DataPrepService/GetRun": _FEEDBACK,
    "rlhf.v1.TrainerService/GetRun": _FEEDBACK,
    "rlhf.v1.TrainerService/WatchRun": _FEEDBACK,
    "rlhf.v1.TrainerService/ListRuns": _FEEDBACK,
    "rlhf.v1.TrainerService/ListModels": _FEEDBACK,
    "rlhf.v1.TrainerService/GetModel": _FEEDBACK,
    "rlhf.v1.RewardModelService/GetRun": _FEEDBACK,
    "rlhf.v1.RewardModelService/Score": _FEEDBACK,
    "rlhf.v1.RewardModelService/Classify": _FEEDBACK,
    "rlhf.v1.RewardModelService/Compare": _FEEDBACK,
    "rlhf.v1.AdversaryService/GetRun": _FEEDBACK,
    "rlhf.v1.AdversaryService/GetReport": _FEEDBACK,
    # changing what the platform trains and serves
    "rlhf.v1.DataPrepService/RegisterSource": _OPERATOR,
    "rlhf.v1.DataPrepService/PrepareDataset": _OPERATOR,
    "rlhf.v1.TrainerService/StartRun": _OPERATOR,
    "rlhf.v1.TrainerService/CancelRun": _OPERATOR,
    "rlhf.v1.TrainerService/PromoteModel": _OPERATOR,
    "rlhf.v1.TrainerService/RollbackModel": _OPERATOR,
    "rlhf.v1.RewardModelService/Train": _OPERATOR,
    "rlhf.v1.AdversaryService/Attack": _OPERATOR,
    "rlhf.v1.AdversaryService/RedTeam": _OPERATOR,
}

#: Short service names used in token scopes (`services=trainer,inference`).
SERVICE_NAMES = {
    "rlhf.v1.DataPrepService": "dataprep",
    "rlhf.v1.TrainerService": "trainer",
    "rlhf.v1.RewardModelService": "reward",
    "rlhf.v1.AdversaryService": "adversary",
    "rlhf.v1.InferenceService": "inference",
}

#: The caller of the RPC being handled (None with auth off), for handlers that scope
#: what a caller may touch (e.g. feedback ids).
current_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "rlhf_grpc_principal", default=None
)

_RESOURCE_FIELDS = ("pipeline", "version", "name", "model_version", "run_id", "target_version")


def required_role(service: str, method: str) -> str:
    return METHOD_ROLES.get(f"{service}/{method}", "admin")


def refusal(principal: Principal, service: str, method: str) -> str | None:
    """Why `principal` may not call the method, or None when it may."""
    short = SERVICE_NAMES.get(service, service)
    if principal.services is not None and short not in principal.services:
        return f"token {principal.name!r} is not valid for the {short} service"
    needed = required_role(service, method)
    if ROLES.index(principal.role) < ROLES.index(needed):
        return f"role {principal.role!r} may not call {method} (needs {needed!r})"
    return None


def resource_of(request: Any) -> str:
    """The thing a request names, for the audit line (a short prefix)."""
    for field in _RESOURCE_FIELDS:
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return f"{field}={value[:80]}"
    return ""


def audit(
    principal: Principal, method: str, allowed: bool, reason: str = "", resource: str = ""
) -> None:
    audit_log.info(
        json.dumps(
            {
                "event": "rpc.authorization",
                "principal": principal.name,
                "role": principal.role,
                "method": method,
                "resource": resource,
                "allowed": allowed,
                "reason": reason,
            }
        )
    )
