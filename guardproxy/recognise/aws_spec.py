"""The distilled AWS model: what the recogniser keeps of each botocore service model.

Plain frozen dataclasses, pickled into the index cache (``aws_index``) and built from
botocore's JSON (``aws_models``).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FormShape:
    """How botocore's query (awsQuery) or EC2 serialiser lays one input shape out as
    form keys (``botocore/serialize.py``: ``QuerySerializer``, ``EC2Serializer``).

    ``kind`` is ``scalar``, ``structure``, ``list``, ``map`` or ``opaque`` (a shape that
    contains itself: its keys are read leniently). Structures list their members as
    (wire name, member name, shape); the wire name already has the flattened-list
    renaming applied. Lists number their items after ``item_path`` (``member`` by
    default, empty when flattened or EC2); maps number entries after ``item_path``
    (``entry``, or empty when flattened) with ``key_name``/``value_name`` children.
    """

    kind: str
    fields: tuple[tuple[str, str, FormShape], ...] = ()
    item: FormShape | None = None  # list item or map value
    item_path: str = ""
    key_name: str = "key"
    value_name: str = "value"
    by_wire: dict[str, int] = field(default_factory=dict, compare=False)  # wire -> fields index


OPAQUE = FormShape("opaque")
SCALAR = FormShape("scalar")


@dataclass(frozen=True, slots=True)
class Ident:
    """The parameter that names an operation's target resource."""

    member: str
    kind: str  # name | id | arn | url
    generic: bool  # the member says nothing about the resource type (Name, Id, ResourceArn)


@dataclass(frozen=True, slots=True)
class OpSpec:
    """What the recogniser needs of one operation."""

    name: str
    method: str
    path: str  # URI template without the query part
    query_literals: tuple[tuple[str, str], ...]  # ("versioning", ""), ("list-type", "2")
    required_query: tuple[str, ...]  # wire names of required query-string members
    required_headers: tuple[str, ...]  # lower-case names of required header members
    labels: tuple[str, ...]  # member names of the URI labels, in template order
    greedy: bool
    literal_len: int
    host_prefix: str
    deprecated: bool
    query_members: tuple[tuple[str, str], ...]  # (wire name, member)
    header_members: tuple[tuple[str, str], ...]  # (lower-case header, member)
    body_names: tuple[tuple[str, str], ...]  # (wire name, member) where they differ
    form_names: tuple[tuple[str, str], ...]  # query/ec2 form key -> member, where they differ
    payload: str  # name of the payload member, if any
    parse_body: bool  # the body is a structure worth decoding (not a blob or a stream)
    ident: Ident | None
    resource: str  # resource noun for ``aws:<service>:<resource>``
    express: bool = False  # S3 Express control-plane operation (s3express signing)
    body_wire: dict[str, str] = field(default_factory=dict, compare=False)  # body wire -> member
    body_folded: dict[str, str] = field(default_factory=dict, compare=False)  # lower wire/member
    located: dict[str, str] = field(default_factory=dict, compare=False)  # lower names of
    # the members bound to the URI, query string or a header -> member
    query_lists: frozenset[str] = frozenset()  # querystring wire names botocore may repeat
    query_map: bool = False  # a querystring member is a map: any query key may be its entry
    form_shape: FormShape | None = None  # the input as awsQuery/EC2 form keys, if spoken


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One service model, reduced."""

    name: str
    signing_name: str
    endpoint_prefix: str
    target_prefix: str
    api_version: str
    protocols: tuple[str, ...]
    query_compatible: bool
    resource_nouns: frozenset[str]
    ops: dict[str, OpSpec]

    @property
    def speaks_rest(self) -> bool:
        """Whether requests arrive as REST calls (method and URI template)."""
        return "rest-json" in self.protocols or "rest-xml" in self.protocols

    @property
    def speaks_query(self) -> bool:
        """Whether requests may arrive as ``Action=`` forms (old SDKs for awsQueryCompatible)."""
        return self.query_compatible or any(p in ("query", "ec2") for p in self.protocols)


@dataclass(slots=True)
class Tables:
    """Small lookup tables loaded eagerly; model bodies stay pickled until used."""

    botocore_version: str
    by_signing: dict[str, tuple[str, ...]]
    by_prefix: dict[str, tuple[str, ...]]
    by_target: dict[str, tuple[str, ...]]
    by_action: dict[str, tuple[str, ...]]  # awsQuery/EC2 operation name -> models speaking it
