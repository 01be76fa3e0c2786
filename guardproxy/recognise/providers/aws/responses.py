"""Names AWS responses give to server ids: the EC2 instances a ``RunInstances`` or
``DescribeInstances`` response lists, with their tags (``ResponseNames`` in the
registry; ``session/names.py`` learns them and resolves later id-only calls)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from guardproxy.action import Scope
from guardproxy.recognise.common import resource_key
from guardproxy.recognise.registry import ResponseNames

__all__ = ["EC2_INSTANCES", "ec2_instances", "instance_key"]

_INSTANCE = "aws:ec2:instance"


def instance_key(region: str, instance_id: str) -> str:
    """Where the name of ``instance_id`` in ``region`` is kept."""
    return f"aws:{region}:ec2:instance/{instance_id}"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ec2_instances(body: bytes) -> list[tuple[str, dict[str, str]]]:
    """Instance ids and their tags in a RunInstances or DescribeInstances response (XML).

    Both list instances as ``item`` elements with an ``instanceId`` child and an
    optional ``tagSet`` of ``item``/``key``/``value``; nothing else is read.
    """
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return []  # EC2 never sends one; refusing them rules out entity expansion
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return []
    found = []
    for item in root.iter():
        if _local(item.tag) != "item":
            continue
        children = {_local(child.tag): child for child in item}
        instance = children.get("instanceId")
        if instance is None or not (instance.text or "").startswith("i-"):
            continue
        tags: dict[str, str] = {}
        tag_set = children.get("tagSet")
        for tag in tag_set if tag_set is not None else ():
            fields = {_local(child.tag): child.text or "" for child in tag}
            if fields.get("key"):
                tags[fields["key"]] = fields.get("value", "")
        found.append(((instance.text or "").strip(), tags))
    return found


def _instance_id_key(scope: Scope, instance_id: str) -> str:
    return instance_key(scope.region, instance_id)


def _instance_name_key(scope: Scope, name: str) -> str:
    return resource_key("aws", ("", scope.region), _INSTANCE, name)


EC2_INSTANCES = ResponseNames(
    resource_type=_INSTANCE,
    id_prefix="i-",
    operations=frozenset({("ec2", "RunInstances"), ("ec2", "DescribeInstances")}),
    parse=ec2_instances,
    id_key=_instance_id_key,
    name_key=_instance_name_key,
)
