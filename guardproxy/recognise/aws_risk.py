"""Risk tags of an AWS request: the parameters that make an operation worse.

The verb class says what kind of operation a request is; these tags say what the
parameters add to it — a delete without a final snapshot, a forced deletion, a
protection switched off. Every tag is one of the shared vocabulary the shipped
policies match (see ``policies/common.yaml``): ``bulk``, ``skip-final-snapshot``,
``delete-backups``, ``force``, ``protection-removal``, ``versioning-suspended``,
``versioned-object-delete``, ``dns-delete``, ``scale-to-zero``, ``audit-disabled``,
``remote-shell``.

Parameter names are matched case-insensitively and, where AWS nests them (FSx backup
settings, EKS scaling configs), at any depth, so one rule covers every service that
reuses the name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from guardproxy.action import Verb

_MAX_DEPTH = 8

_SKIP_SNAPSHOT = frozenset({"skipfinalsnapshot", "skipfinalclustersnapshot", "skipfinalbackup"})
_DELETE_BACKUPS = frozenset({"deleteautomatedbackups"})
_FORCE = frozenset(
    {
        "force",
        "forcedelete",
        "forcedeletewithoutrecovery",
        "enforceconsumerdeletion",
        "bypassgovernanceretention",
        "forceterminate",
    }
)
_PROTECTION = frozenset(
    {
        "deletionprotection",
        "deletionprotectionenabled",
        "enableterminationprotection",
        "terminationprotected",
        "terminationprotection",
        "disableapitermination",
    }
)
_DESIRED = frozenset({"desiredcount", "desiredcapacity", "desiredsize", "desiredinstancecount"})

# Turning off or removing the audit trail itself. A short list on purpose: these are
# the operations whose only effect is that later actions go unrecorded.
_AUDIT_OFF: frozenset[tuple[str, str]] = frozenset(
    {
        ("cloudtrail", "StopLogging"),
        ("cloudtrail", "DeleteTrail"),
        ("config", "StopConfigurationRecorder"),
        ("config", "DeleteConfigurationRecorder"),
        ("config", "DeleteDeliveryChannel"),
        ("guardduty", "DeleteDetector"),
        ("securityhub", "DisableSecurityHub"),
    }
)

_REMOTE_SHELL: frozenset[tuple[str, str]] = frozenset(
    {
        ("ssm", "SendCommand"),  # any document, AWS-RunShellScript included: a shell
        ("ssm", "StartSession"),  # an interactive shell or a port forward
        ("ssm", "StartAutomationExecution"),  # runbooks run commands on instances
        ("ecs", "ExecuteCommand"),  # a shell in a running task's container
        ("ec2-instance-connect", "SendSSHPublicKey"),  # an SSH key for the next minute
        ("ec2-instance-connect", "SendSerialConsoleSSHPublicKey"),
    }
)
"""Operations that run commands of the caller's choosing on running machines: like
``kubectl exec``, anything can happen there and the request does not say what."""


def _walk(value: Any, depth: int = 0) -> Iterator[tuple[str, Any]]:
    """Every (lower-case key, value) pair in nested dicts and lists."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key).lower(), item
            yield from _walk(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, depth + 1)


def _values(params: Mapping[str, Any], names: frozenset[str]) -> list[Any]:
    """Values of the keys called ``names`` at any depth. A key that holds a list of
    plain values counts each: an XML element repeated where the shape has one
    (``<Status>Enabled</Status><Status>Suspended</Status>``) reads as a list, and a
    server may take any of its items."""
    out: list[Any] = []
    for key, value in _walk(params):
        if key not in names:
            continue
        if isinstance(value, list):
            out.extend(v for v in value if not isinstance(v, (list, Mapping)))
        out.append(value)
    return out


def truthy(value: Any) -> bool:
    """A boolean parameter set to true, whatever the encoding (JSON, form, XML)."""
    if isinstance(value, Mapping):  # EC2 AttributeBooleanValue {"Value": ...}
        return truthy(value.get("Value", value.get("value")))
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def falsy(value: Any) -> bool:
    """A boolean parameter explicitly set to false."""
    if isinstance(value, Mapping):
        return falsy(value.get("Value", value.get("value")))
    return value is False or (isinstance(value, str) and value.strip().lower() == "false")


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _count(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    return 1 if value not in (None, "") else 0


def _switched_off(value: Any) -> bool:
    """A protection setting turned off: false, or an enum like Auto Scaling's ``none``."""
    if isinstance(value, str) and value.strip().lower() in ("none", "disabled", "off"):
        return True
    return falsy(value)


def _protection_removed(params: Mapping[str, Any]) -> bool:
    if any(_switched_off(v) for v in _values(params, _PROTECTION)):
        return True
    # EC2 ModifyInstanceAttribute in its Attribute/Value form.
    attribute = str(params.get("Attribute", "")).lower()
    if attribute == "disableapitermination" and falsy(params.get("Value")):
        return True
    # Key/Value attribute lists (ELBv2 deletion_protection.enabled=false).
    return any(
        "deletion_protection" in str(entry.get("Key", "")).lower() and falsy(entry.get("Value"))
        for entry in _mappings(params)
    )


def _mappings(value: Any, depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """Every mapping in nested structures."""
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        yield value
        for item in value.values():
            yield from _mappings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _mappings(item, depth + 1)


def risk_tags(
    service: str,
    operation: str,
    verb: Verb,
    params: Mapping[str, Any],
    ident_count: int,
) -> list[str]:
    """The risk tags for ``service:operation`` called with ``params``.

    ``ident_count`` is how many resources the identifying parameter names.
    """
    if verb is Verb.READ:
        return []
    tags: list[str] = []
    mutating_existing = verb not in (Verb.CREATE,)

    bulk = ident_count > 1 or operation.startswith("Purge")
    if service == "s3" and operation == "DeleteObjects":
        bulk = True
    if operation.startswith("Batch") and any(
        isinstance(v, list) and len(v) > 1 for v in params.values()
    ):
        bulk = True
    if bulk:
        tags.append("bulk")

    if any(truthy(v) for v in _values(params, _SKIP_SNAPSHOT)):
        tags.append("skip-final-snapshot")
    if any(truthy(v) for v in _values(params, _DELETE_BACKUPS)):
        tags.append("delete-backups")

    force = any(truthy(v) for k, v in params.items() if k.lower() in _FORCE)
    window = as_int(params.get("RecoveryWindowInDays"))
    if window is not None and window <= 0:
        force = True
    if str(params.get("DeletionMode", "")).upper() == "FORCE_DELETE_STACK":
        force = True
    if force:
        tags.append("force")

    if mutating_existing and _protection_removed(params):
        tags.append("protection-removal")

    if service in ("s3", "s3control") and operation.endswith("BucketVersioning"):
        statuses = [str(v) for v in _values(params, frozenset({"status"}))]
        if any(s.strip().lower() == "suspended" for s in statuses):
            tags.append("versioning-suspended")

    versions = _values(params, frozenset({"versionid"}))
    if (
        service == "s3"
        and operation in ("DeleteObject", "DeleteObjects")
        and any(map(_count, versions))
    ):
        tags.append("versioned-object-delete")

    if service == "route53" and operation == "ChangeResourceRecordSets":
        actions = [str(v).upper() for v in _values(params, frozenset({"action"}))]
        if "DELETE" in actions:
            tags.append("dns-delete")

    if mutating_existing:
        zero_desired = any(as_int(v) == 0 for v in _values(params, _DESIRED))
        zero_max = any(as_int(v) == 0 for v in _values(params, frozenset({"maxsize"})))
        if zero_desired or zero_max:
            tags.append("scale-to-zero")

    if (service, operation) in _AUDIT_OFF:
        tags.append("audit-disabled")
    if (service, operation) in _REMOTE_SHELL:
        tags.append("remote-shell")
    return tags


def dry_run(params: Mapping[str, Any]) -> bool:
    """EC2-style ``DryRun=true``: AWS checks permissions and changes nothing."""
    return any(truthy(v) for k, v in params.items() if k.lower() == "dryrun")
