"""Reading AWS operation and member names: words, the verb, the noun, the resource type.

AWS names are regular (``DeleteDBInstance``, ``TerminateInstances``,
``DBInstanceIdentifier``), so the verb class and the resource an operation acts on can
be derived from the names in the botocore models instead of a table per operation.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+\d*|[A-Z]+\d*|\d+")

# Words that end the noun phrase: "RemoveAccountFromOrganization" acts on the account,
# "AddRoleToInstanceProfile" on the role.
_PREPOSITIONS = frozenset({"From", "To", "For", "With", "In", "On", "By", "Into", "At", "Of"})

_VERSION = re.compile(r"^(V\d+|\d+)$")

# Words ending in "s" that are singular already.
_SINGULAR_S = frozenset(
    {
        "Access",
        "Address",
        "Alias",
        "Analysis",
        "Bias",
        "Business",
        "Canvas",
        "Class",
        "Dns",
        "Ens",
        "Express",
        "Lens",
        "Process",
        "Progress",
        "Kms",
        "Https",
        "Status",
        "Success",
        "Series",
        "Sms",
        "Sns",
        "Sqs",
        "Ssm",
        "Ecs",
        "Eks",
        "Efs",
        "Aws",
        "Iops",
        "Ops",
        "News",
        "Settings",
        "Details",
        "Metrics",
        "Analytics",
        "Statistics",
        "Insights",
        "Credentials",
        "Permissions",
    }
)


@lru_cache(maxsize=65536)
def words(name: str) -> tuple[str, ...]:
    """CamelCase words, acronyms whole: ``DBInstanceIdentifier`` -> DB, Instance, Identifier."""
    return tuple(_WORD.findall(name))


def singular(word: str) -> str:
    """English singular of a CamelCase word, good enough for AWS nouns."""
    if len(word) < 4 or word in _SINGULAR_S or not word.endswith("s") or word.isupper():
        return word
    lower = word.lower()
    if lower.endswith(("ss", "us", "is")):
        return word
    if lower.endswith("ies"):
        return word[:-3] + "y"
    if lower.endswith(("sses", "xes", "shes", "zzes", "iases", "uses")):
        return word[:-2]
    if lower.endswith("ches"):
        return word[:-1] if lower[-5] in "aeiou" else word[:-2]
    return word[:-1]


@lru_cache(maxsize=65536)
def split_operation(operation: str) -> tuple[str, tuple[str, ...], bool]:
    """``(verb, noun words, batch)`` of an operation name.

    ``BatchGetItem`` -> (Get, (Item,), True); ``ListObjectsV2`` -> (List, (Object,), False);
    Cognito's ``Admin`` prefix is dropped like ``Batch``.
    The noun is cut at the first preposition and its last word made singular.
    """
    parts = list(words(operation))
    batch = False
    if len(parts) > 1 and parts[0] == "Batch":
        parts = parts[1:]
        batch = True
    if len(parts) > 1 and parts[0] == "Admin":  # Cognito's AdminDeleteUser is a Delete
        parts = parts[1:]
    if not parts:
        return "", (), batch
    verb, rest = parts[0], parts[1:]
    noun: list[str] = []
    for word in rest:
        if word in _PREPOSITIONS and noun:
            break
        noun.append(word)
    while noun and _VERSION.match(noun[-1]):
        noun.pop()
    if noun:
        noun[-1] = singular(noun[-1])
    return verb, tuple(noun), batch


def kebab(noun: tuple[str, ...]) -> str:
    """Noun words as a resource type segment: (DB, Instance) -> ``db-instance``."""
    return "-".join(w.lower() for w in noun)


# Member-name suffixes that mark an identifying parameter, longest first. The kind
# decides whether the value is a name, an id or an ARN on the action's resource.
_ID_SUFFIXES: tuple[tuple[str, str, bool], ...] = (
    ("Identifiers", "name", True),
    ("Identifier", "name", False),
    ("Names", "name", True),
    ("Name", "name", False),
    ("Urls", "url", True),
    ("Url", "url", False),
    ("URL", "url", False),
    ("Arns", "arn", True),
    ("Arn", "arn", False),
    ("ARN", "arn", False),
    ("Ids", "id", True),
    ("IDs", "id", True),
    ("Id", "id", False),
    ("ID", "id", False),
)


def member_stem(member: str) -> tuple[tuple[str, ...], str, bool] | None:
    """Words before an identifying suffix, the kind and plurality.

    ``StackName`` -> ((Stack,), name, False); ``InstanceIds`` -> ((Instance,), id, True);
    ``name`` -> ((), name, False). ``None`` if the member has no identifying suffix.
    """
    member = member[:1].upper() + member[1:]
    for suffix, kind, plural in _ID_SUFFIXES:
        if member.endswith(suffix):
            stem = words(member[: -len(suffix)])
            if stem:
                stem = (*stem[:-1], singular(stem[-1]))
            return stem, kind, plural
    return None


def noun_words(member: str) -> tuple[str, ...]:
    """A bare member name as noun words: ``cluster`` -> (Cluster,), ``Bucket`` -> (Bucket,)."""
    member = member[:1].upper() + member[1:]
    found = words(member)
    if found:
        found = (*found[:-1], singular(found[-1]))
    return found


def arn_parts(value: str) -> tuple[str, str, str, str] | None:
    """``(service, region, account, resource)`` of an ARN, or None."""
    if not value.startswith("arn:"):
        return None
    parts = value.split(":", 5)
    if len(parts) < 6:
        return None
    return parts[2], parts[3], parts[4], parts[5]


def arn_resource_name(service: str, resource: str) -> str:
    """The user-chosen name inside an ARN's resource part.

    ``stack/prod-calc/<uuid>`` -> prod-calc, ``function:api:live`` -> api, ``my-bucket`` ->
    my-bucket; IAM paths (``role/path/to/name``) end in the name.
    """
    pieces = re.split(r"[/:]", resource)
    if len(pieces) == 1:
        return pieces[0]
    if service == "iam":
        return pieces[-1]
    return pieces[1]
