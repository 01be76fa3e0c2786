"""AWS CloudFormation: what ``DeleteStack`` would destroy (resources by type, termination
protection, exports other stacks import), and the template and resource list saved to
the data directory before it is released.
"""

from __future__ import annotations

import json
import re
from typing import Any

from guardproxy.impact.aws._client import AwsTarget, read_pages, time_text
from guardproxy.impact.model import Budget, Facts, ImpactError, StepContext, count_text, plural


def preview_stack(target: AwsTarget, budget: Budget) -> Facts:
    name = target.one("StackName")
    cfn = target.client("cloudformation", budget)
    stacks = cfn.describe_stacks(StackName=name).get("Stacks") or []
    if not stacks:
        raise ImpactError(f"stack {name} does not exist")
    stack = stacks[0]
    stack_id = str(stack.get("StackId", ""))
    resources, more = read_pages(
        cfn.list_stack_resources, "StackResourceSummaries", "NextToken", StackName=name
    )
    counts: dict[str, int] = {}
    for resource in resources:
        kind = str(resource.get("ResourceType", "?"))
        counts[kind] = counts.get(kind, 0) + 1
    exports, _ = read_pages(cfn.list_exports, "Exports", "NextToken")
    own = [str(e.get("Name", "")) for e in exports if e.get("ExportingStackId") == stack_id]
    imported, source = _importers(cfn, own, name)
    protected = bool(stack.get("EnableTerminationProtection"))
    parts = [
        plural(len(resources), "resource", at_least=more)
        + (f" ({count_text(counts)})" if counts else ""),
        f"termination protection {'on' if protected else 'off'}",
    ]
    if imported:
        parts.append(
            "exports imported by other stacks: "
            + "; ".join(f"{e} by {', '.join(s)}" for e, s in imported.items())
        )
    elif own and source:
        parts.append(f"{plural(len(own), 'export')}, imported by no other stack")
    elif own:
        parts.append(f"{plural(len(own), 'export')}; who imports them is unknown")
    return Facts(
        "; ".join(parts),
        {
            "kind": "aws:cloudformation:stack",
            "stack": name,
            "status": stack.get("StackStatus", ""),
            "resources": len(resources),
            "resources_at_least": more,
            "resource_types": counts,
            "termination_protection": protected,
            "exports": own,
            "imported_by": imported,
            "imports_read_from": source,
        },
    )


IMPORT_SCAN_STACKS = 10
"""Other stacks whose templates are read for imports when ListImports cannot answer."""


def _importers(cfn: Any, exports: list[str], stack: str) -> tuple[dict[str, list[str]], str]:
    """Which stacks import each export, and from where that was read (``ListImports``,
    ``templates``, or "" when it could not be). ListImports first; where an endpoint
    cannot answer it (moto, LocalStack), the other stacks' templates are read for
    ``Fn::ImportValue`` of the name, as CloudFormation itself resolves it."""
    if not exports:
        return {}, "ListImports"
    imported: dict[str, list[str]] = {}
    try:
        for export in exports[:5]:
            try:
                importers, _ = read_pages(
                    cfn.list_imports, "Imports", "NextToken", ExportName=export
                )
            except ImpactError as error:
                if "not imported" not in str(error).lower():  # CloudFormation's "none"
                    raise
                importers = []
            if importers:
                imported[export] = [str(i) for i in importers]
        return imported, "ListImports"
    except ImpactError:
        pass
    try:
        stacks, more = read_pages(
            cfn.list_stacks, "StackSummaries", "NextToken",
            StackStatusFilter=["CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE",
                               "IMPORT_COMPLETE", "ROLLBACK_COMPLETE"],
        )  # fmt: skip
        others = [str(s.get("StackName")) for s in stacks if s.get("StackName") != stack]
        if more or len(others) > IMPORT_SCAN_STACKS:
            return {}, ""
        for other in others:
            body = cfn.get_template(StackName=other).get("TemplateBody")
            for export in exports:
                if _imports(body, export):
                    imported.setdefault(export, []).append(other)
    except ImpactError:
        return {}, ""
    return imported, "templates"


def _imports(template: Any, export: str) -> bool:
    """Whether a template imports ``export`` by name (``Fn::ImportValue``/``!ImportValue``)."""
    if isinstance(template, str):
        pattern = rf"(Fn::ImportValue|!ImportValue)[\s:\"']*{re.escape(export)}\b"
        return re.search(pattern, template) is not None
    if isinstance(template, dict):
        if template.get("Fn::ImportValue") == export:
            return True
        return any(_imports(value, export) for value in template.values())
    if isinstance(template, list):
        return any(_imports(value, export) for value in template)
    return False


def save_stack(target: AwsTarget, budget: Budget, ctx: StepContext) -> dict[str, Any]:
    name = target.one("StackName")
    cfn = target.client("cloudformation", budget)
    stacks = cfn.describe_stacks(StackName=name).get("Stacks") or []
    template = cfn.get_template(StackName=name, TemplateStage="Original").get("TemplateBody")
    resources, more = read_pages(
        cfn.list_stack_resources, "StackResourceSummaries", "NextToken", StackName=name
    )
    if more:
        raise ImpactError(f"stack {name} has more resources than the step reads")
    folder = ctx.folder(f"cloudformation-{name}")
    body = template if isinstance(template, str) else json.dumps(template, indent=2)
    suffix = "json" if body.lstrip().startswith("{") else "yaml"
    (folder / f"template.{suffix}").write_text(body, encoding="utf-8")
    (folder / "resources.json").write_text(
        json.dumps(resources, indent=2, default=time_text), encoding="utf-8"
    )
    (folder / "stack.json").write_text(
        json.dumps(stacks[0] if stacks else {}, indent=2, default=time_text), encoding="utf-8"
    )
    return {
        "text": f"template and {plural(len(resources), 'resource')} of {name} saved to {folder}",
        "folder": str(folder),
        "resources": len(resources),
    }
