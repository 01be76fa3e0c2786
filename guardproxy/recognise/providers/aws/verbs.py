"""Verb class of an AWS operation, from its name.

AWS operation names start with a verb from a small vocabulary (List, Get, Delete,
Create... cover most of the ~20,000 operations), so the class is read off the name:
no per-operation table has to follow botocore's weekly model updates. The rules:

1. The leading verb gives the base class (``Batch`` is skipped: BatchGetItem is a Get).
2. Changing who may do what is ``permission``, whatever the verb: everything that
   mutates IAM-like services, Authorize/Grant/Share verbs, and nouns that are access
   policies, ACLs, grants, access keys or security-group rules.
3. Deleting, closing or terminating a *container of data or of many resources* (a
   stack, bucket, table, database, instance, cluster, file system, repository,
   environment, account...) is ``destroy``. Deleting a thing inside one (an object, an
   item, a rule) or plumbing around one (a route table, a subnet group) stays ``delete``;
   so does terminating a session or a connection.
4. Put on a thing the service creates and deletes (PutObject, PutItem) creates it; Put
   on an aspect of a resource (PutBucketVersioning) updates its configuration.
5. Starting an execution, a command or a session runs code: ``execute``.

Verbs outside the vocabulary stay ``unknown``, which policies treat as fail-closed.
"""

from __future__ import annotations

from functools import lru_cache

from guardproxy.action import Verb
from guardproxy.recognise.providers.aws.names import split_operation

_READ = frozenset(
    {
        "Describe",
        "Get",
        "List",
        "Head",
        "Search",
        "Select",
        "Query",
        "Scan",
        "Check",
        "Lookup",
        "Validate",
        "Estimate",
        "Preview",
        "Filter",
        "Simulate",
        "Retrieve",
        "Download",
        "View",
        "Count",
        "Detect",
        "Analyze",
        "Receive",
        "Discover",
        "Decode",
        "Derive",
        "Encapsulate",
        "Decapsulate",
        "Evaluate",
        "Is",
        "Resolve",
        "Calculate",
        "Compare",
        "Predict",
        "Infer",
        "Recognize",
        "Suggest",
        "Render",
        # Data-plane cryptography and credentials change no infrastructure; obtaining
        # credentials the caller is already allowed to obtain grants nothing new.
        "Decrypt",
        "Encrypt",
        "Verify",
        "Sign",
        "Generate",
        "Assume",
    }
)

_CREATE = frozenset(
    {
        "Create",
        "Put",
        "Run",
        "Start",
        "Import",
        "Register",
        "Allocate",
        "Copy",
        "Upload",
        "Request",
        "Provision",
        "Purchase",
        "Launch",
        "Clone",
        "Complete",
        "Send",
        "Publish",
        "Submit",
        "Issue",
        "Export",
        "Initiate",
        "Duplicate",
        "Subscribe",
        "Invite",
        "Replicate",
        "Bundle",
        "Compose",
        "Post",
        "Ingest",
        "Build",
        "Index",
        "Claim",
        "Populate",
        "Checkout",
        "Meter",
    }
)

_UPDATE = frozenset(
    {
        "Update",
        "Modify",
        "Set",
        "Change",
        "Tag",
        "Untag",
        "Enable",
        "Disable",
        "Stop",
        "Reboot",
        "Reset",
        "Restore",
        "Associate",
        "Disassociate",
        "Attach",
        "Detach",
        "Replace",
        "Rotate",
        "Upgrade",
        "Apply",
        "Promote",
        "Failover",
        "Switchover",
        "Add",
        "Accept",
        "Reject",
        "Confirm",
        "Restart",
        "Resume",
        "Pause",
        "Suspend",
        "Increase",
        "Decrease",
        "Move",
        "Rollback",
        "Deploy",
        "Write",
        "Transact",
        "Merge",
        "Assign",
        "Unassign",
        "Activate",
        "Deactivate",
        "Refresh",
        "Continue",
        "Retry",
        "Monitor",
        "Unmonitor",
        "Lock",
        "Unlock",
        "Advertise",
        "Withdraw",
        "Connect",
        "Disconnect",
        "Decline",
        "Enter",
        "Exit",
        "Label",
        "Unlabel",
        "Resync",
        "Signal",
        "Record",
        "Report",
        "Backtrack",
        "Swap",
        "Checkpoint",
        "Rename",
        "Opt",
        "Configure",
        "Deprecate",
        "Undeprecate",
        "Dissociate",
        "Approve",
        "Archive",
        "Unarchive",
        "Renew",
        "Acknowledge",
        "Notify",
        "Respond",
        "Transfer",
        "Reload",
        "Reorder",
        "Clear",
        "Override",
        "Sync",
        "Commit",
        "Manage",
        "Split",
        "Define",
        "Initialize",
        "Unlink",
        "Join",
        "Extend",
    }
)

_DELETE = frozenset(
    {
        "Delete",
        "Remove",
        "Deregister",
        "Cancel",
        "Revoke",
        "Purge",
        "Release",
        "Deprovision",
        "Abort",
        "Close",
        "Leave",
        "Discard",
        "Flush",
        "Retire",
        "Unregister",
        "Unsubscribe",
        "Terminate",
        "Expire",
        "Redact",
    }
)

_EXECUTE = frozenset({"Invoke", "Execute", "Test", "Converse", "Chat"})

# Rebuilding (Elastic Beanstalk RebuildEnvironment) is delete-and-recreate by design.
_DESTROY = frozenset({"Rebuild"})

_PERMISSION_VERBS = frozenset({"Authorize", "Deauthorize", "Grant", "Share", "Unshare"})

# Services where every change is a change of who may do what.
_PERMISSION_SERVICES = frozenset(
    {"iam", "sso-admin", "identitystore", "ram", "lakeformation", "verifiedpermissions"}
)

# Noun phrases (as word tuples) that name access rules.
_PERMISSION_NOUNS: tuple[tuple[str, ...], ...] = (
    ("Policy",),
    ("Permission",),
    ("Acl",),
    ("ACL",),
    ("Grant",),
    ("Access", "Key"),
    ("Login", "Profile"),
    ("Public", "Access", "Block"),
    ("Resource", "Share"),
    ("Credential",),
    ("Security", "Group", "Ingress"),
    ("Security", "Group", "Egress"),
)

# "Policy" also names things that govern something other than access.
_NON_ACCESS_POLICY = frozenset(
    {
        "Lifecycle",
        "Retention",
        "Scaling",
        "Backup",
        "Replication",
        "Routing",
        "Cache",
        "Origin",
        "Request",
        "Response",
        "Headers",
        "Health",
        "Placement",
        "Patch",
        "Deletion",
        "Storage",
        "Tiering",
        "Scheduling",
        "Rotation",
        "Maintenance",
        "Balancer",
        "Firewall",
        "Traffic",
        "Data",
        "Archive",
        "Snapshot",
        "Query",
        "Log",
        "Logging",
        "Metric",
        "Compression",
        "Cooldown",
        "Termination",
        "Instance",
        "Retry",
        "Security",
    }
)

# Containers of data or of many resources: deleting one is a destroy. Matched as the
# last words of the operation's noun, so DeleteDBClusterSnapshot is a snapshot and
# DeleteClusterSubnetGroup is not a cluster.
_CONTAINERS: tuple[tuple[str, ...], ...] = (
    ("Stack",),
    ("Stack", "Set"),
    ("Bucket",),
    ("Directory", "Bucket"),
    ("Table",),
    ("Instance",),
    ("Cluster",),
    ("Replication", "Group"),
    ("Auto", "Scaling", "Group"),
    ("Nodegroup",),
    ("File", "System"),
    ("Repository",),
    ("Environment",),
    ("Account",),
    ("Organization",),
    ("Database",),
    ("Volume",),
    ("Log", "Group"),
    ("Stream",),
    ("Queue",),
    ("Vault",),
    ("Recovery", "Point"),
    ("Backup",),
    ("Snapshot",),
    ("Hosted", "Zone"),
    ("Keyspace",),
    ("Namespace",),
    ("Ledger",),
    ("Graph",),
    ("Domain",),
    ("Collection",),
    ("Datastore",),
    ("Data", "Store"),
    ("Event", "Data", "Store"),
    ("Registry",),
    ("Warehouse",),
    ("Job", "Flow"),
    ("Catalog",),
    ("Index",),
    ("Cache",),
    ("Workgroup",),
)

# Delete-class verbs that remove the named thing itself (Remove/Deregister/Detach
# usually unlink it from something else, which survives).
_DESTROYING_VERBS = frozenset({"Delete", "Close", "Terminate"})

# Verbs that, with these nouns, start running code or a shell.
_EXECUTE_NOUNS = frozenset({"Execution", "Command", "Session"})

# Operation names whose class no naming rule gives. Kept tiny on purpose.
_OVERRIDES: dict[tuple[str, str], Verb] = {
    # Scheduling a KMS key's deletion crypto-shreds everything encrypted under it.
    ("kms", "ScheduleKeyDeletion"): Verb.DESTROY,
    ("kms", "DeleteImportedKeyMaterial"): Verb.DESTROY,
}


# Words that turn a container noun into network or billing plumbing: a route table,
# a multicast domain, a reserved instance, a traffic-policy instance hold no data.
_NOT_CONTAINER_QUALIFIERS = frozenset(
    {"Route", "Multicast", "Access", "Reserved", "Policy", "Cidr", "Connect", "Endpoint"}
)


def _ends_with(noun: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    return len(noun) >= len(phrase) and noun[len(noun) - len(phrase) :] == phrase


def _contains(noun: tuple[str, ...], phrase: tuple[str, ...]) -> int:
    """Index of ``phrase`` in ``noun`` or -1."""
    n = len(phrase)
    for i in range(len(noun) - n + 1):
        if noun[i : i + n] == phrase:
            return i
    return -1


def is_permission_noun(noun: tuple[str, ...]) -> bool:
    """Whether the noun names an access rule (bucket policy, grant, access key, SG rule)."""
    for phrase in _PERMISSION_NOUNS:
        at = _contains(noun, phrase)
        if at < 0:
            continue
        if phrase == ("Policy",) and at > 0 and noun[at - 1] in _NON_ACCESS_POLICY:
            continue
        return True
    return False


def is_container(noun: tuple[str, ...]) -> bool:
    """Whether the noun names a container of data or of many resources."""
    for phrase in _CONTAINERS:
        if _ends_with(noun, phrase):
            before = len(noun) - len(phrase) - 1
            return before < 0 or noun[before] not in _NOT_CONTAINER_QUALIFIERS
    return False


def _base(verb: str) -> Verb:
    if verb in _READ:
        return Verb.READ
    if verb in _CREATE:
        return Verb.CREATE
    if verb in _UPDATE:
        return Verb.UPDATE
    if verb in _DELETE:
        return Verb.DELETE
    if verb in _EXECUTE:
        return Verb.EXECUTE
    if verb in _DESTROY:
        return Verb.DESTROY
    if verb in _PERMISSION_VERBS:
        return Verb.PERMISSION
    return Verb.UNKNOWN


@lru_cache(maxsize=65536)
def classify(service: str, operation: str, resource_nouns: frozenset[str] = frozenset()) -> Verb:
    """The verb class of ``service:operation``.

    ``resource_nouns`` are the nouns (kebab-case) the service creates and deletes; they
    tell a Put that adds a thing from one that configures an aspect.
    """
    override = _OVERRIDES.get((service, operation))
    if override is not None:
        return override
    verb, noun, _batch = split_operation(operation)
    base = _base(verb)
    if base is Verb.READ:
        return base
    if verb == "Schedule" and noun and noun[-1] == "Deletion":
        verb, noun, base = "Delete", noun[:-1], Verb.DELETE
    if base is Verb.UNKNOWN:
        return base
    if base is Verb.PERMISSION or service in _PERMISSION_SERVICES or is_permission_noun(noun):
        return Verb.PERMISSION
    if base is Verb.DELETE and verb in _DESTROYING_VERBS and is_container(noun):
        return Verb.DESTROY
    if verb == "Put":
        kebab_noun = "-".join(w.lower() for w in noun)
        return Verb.CREATE if kebab_noun in resource_nouns else Verb.UPDATE
    if verb in ("Start", "Send") and noun and noun[-1] in _EXECUTE_NOUNS:
        return Verb.EXECUTE
    return base
