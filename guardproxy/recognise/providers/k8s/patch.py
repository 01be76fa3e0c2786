"""The effective change of a Kubernetes patch on the fields the policies read.

Policies read two things a patch can change: ``spec.replicas`` (``scale-to-zero``) and
``metadata.finalizers`` (removing them forces a stuck deletion through: ``force``).
The current object is not known, so each patch type is evaluated against a stand-in:

* **JSON patch** (RFC 6902, ``application/json-patch+json``) is applied by the
  ``jsonpatch`` library, operation after operation, to a synthetic document that has
  every location the patch names, each holding a :class:`Current` marker for "the
  value the object has there now". What ends at ``/spec/replicas`` is then either a
  value the patch wrote, the same location's current value (unchanged), or another
  location's current value moved or copied there (unknown, so read as zero: the
  strictest reading). ``test`` operations are assumed to pass (the strictest reading:
  the patch applies). The API server uses evanphx/json-patch v4
  (``staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go: applyJSPatch``);
  where that library is laxer than RFC 6902 (bad ``~`` escapes, a missing ``value``,
  negative indices) ``jsonpatch`` refuses the patch and the reading is unknown.
* **Merge patch** (RFC 7386), **strategic merge patch** and **server-side apply**
  (``application/apply-patch+yaml``) all set ``spec.replicas`` to exactly the value
  given at that place in the patch: ``null`` or an absent ``spec`` can only remove it
  (it defaults back to 1), and no strategic directive (``$patch``, ``$retainKeys``,
  ``$deleteFromPrimitiveList``) can make it zero. Finalizers are removed by ``null``
  or ``[]``, by ``$deleteFromPrimitiveList/finalizers``, or by ``$patch: replace`` /
  ``delete`` of ``metadata`` (or ``replace`` of the object) without any.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import jsonpatch
import jsonpointer

__all__ = [
    "Current",
    "PatchError",
    "json_patch_effect",
    "merge_patch_effect",
    "numeric",
]

REPLICAS: Final = ("spec", "replicas")
FINALIZERS: Final = ("metadata", "finalizers")
MAX_OPERATIONS = 10_000  # the API server's own limit (patch.go: maxJSONPatchOperations)
MAX_COPIED_NODES = 200_000  # values duplicated by ``copy`` operations, in JSON nodes


class PatchError(ValueError):
    """The patch cannot be evaluated: the reading of the request is unknown."""


class Current:
    """The value an unknown object holds at ``origin`` now (a JSON pointer's parts).

    Not a JSON value, so no patch can write one; copies are the same marker.
    """

    __slots__ = ("origin",)

    def __init__(self, origin: tuple[str, ...]) -> None:
        self.origin = origin

    def __deepcopy__(self, memo: dict[int, Any]) -> Current:
        return self

    def __repr__(self) -> str:
        return f"Current({'/'.join(self.origin)})"


def numeric(value: Any) -> int | None:
    """A JSON number as an integer when it is one (``0.0`` is zero: YAML floats reach
    the API server as JSON numbers and CRD integer validation accepts integral floats);
    None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


_MISSING: Final = object()


def _is_index(token: str) -> bool:
    return token == "-" or (token.isdigit() and token.isascii())


def _ensure(doc: dict[str, Any], parts: Sequence[str], *, leaf: bool) -> None:
    """Give ``doc`` every container on the way to ``parts`` (and, with ``leaf``, a
    :class:`Current` marker at the end if nothing is there yet)."""
    node: Any = doc
    for depth, token in enumerate(parts):
        last = depth == len(parts) - 1
        if last and not leaf:
            return
        here = tuple(parts[: depth + 1])
        if isinstance(node, dict):
            child = node.get(token, _MISSING)
            if child is _MISSING or (isinstance(child, Current) and not last):
                if last:
                    child = Current(here)
                elif _is_index(parts[depth + 1]):
                    child = []
                else:
                    child = {}
                node[token] = child
            node = child
        elif isinstance(node, list):
            if not token.isdigit() or not token.isascii():
                if token == "-" and last:
                    return
                raise PatchError(f"{'/'.join(parts)}: not an array index")
            index = int(token)
            if index > MAX_OPERATIONS:
                raise PatchError("array index out of range")
            while len(node) <= index:
                node.append(Current((*here[:-1], str(len(node)))))
            if not last and isinstance(node[index], Current):
                node[index] = [] if _is_index(parts[depth + 1]) else {}
            node = node[index]
        else:
            raise PatchError(f"{'/'.join(parts)}: not a container")


def _pointer(op: dict[str, Any], member: str) -> tuple[str, ...]:
    value = op.get(member)
    if not isinstance(value, str):
        raise PatchError(f"operation without a string {member!r}")
    try:
        return tuple(jsonpointer.JsonPointer(value).parts)
    except jsonpointer.JsonPointerException as error:
        raise PatchError(str(error)) from error


def _lookup(doc: Any, parts: Sequence[str]) -> Any:
    """The value at ``parts``, :data:`_MISSING`, or a :class:`Current` standing for
    (part of) a current value: the marker of the deepest location reached."""
    node = doc
    for token in parts:
        if isinstance(node, Current):
            return node
        if isinstance(node, dict):
            node = node.get(token, _MISSING)
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return _MISSING
        if node is _MISSING:
            return node
    return node


def json_patch_effect(operations: Any) -> tuple[int | None, bool]:
    """(``spec.replicas`` after the patch, or None if it does not set a number; whether
    it removes finalizers) for a decoded RFC 6902 patch."""
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise PatchError("a JSON patch is an array of operation objects")
    if len(operations) > MAX_OPERATIONS:
        raise PatchError("too many operations")
    base: dict[str, Any] = {}
    applied = []
    for op in operations:
        kind = op.get("op")
        path = _pointer(op, "path")
        if kind == "test":
            continue
        if kind in ("remove", "replace"):
            _ensure(base, path, leaf=True)
        elif kind in ("move", "copy"):
            _ensure(base, _pointer(op, "from"), leaf=True)
            _ensure(base, path, leaf=False)
        else:
            _ensure(base, path, leaf=False)
        applied.append(op)
    before = _lookup(base, FINALIZERS)
    before_finalizers = list(before) if isinstance(before, list) else before
    budget = [MAX_COPIED_NODES]
    doc: Any = base
    try:
        for op in applied:
            if op.get("op") == "copy":
                # each copy duplicates its value: bounded, or copies of copies (of the
                # whole document) grow exponentially
                _spend(_lookup(doc, _pointer(op, "from")), budget)
            doc = jsonpatch.JsonPatch([op]).apply(doc, in_place=True)
    except PatchError:
        raise
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as error:
        raise PatchError(str(error)) from error
    except (TypeError, KeyError, IndexError, ValueError, AttributeError) as error:
        raise PatchError(f"patch does not apply: {error}") from error
    return _replicas_after(doc), _finalizers_removed(before_finalizers, doc)


def _spend(value: Any, budget: list[int]) -> None:
    """Count the JSON nodes of ``value`` against ``budget``; PatchError when spent."""
    pending = [value]
    while pending:
        budget[0] -= 1
        if budget[0] < 0:
            raise PatchError("the patch copies too much")
        node = pending.pop()
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)


def _replicas_after(doc: Any) -> int | None:
    value = _lookup(doc, REPLICAS)
    if isinstance(value, Current):
        # the current replicas, unchanged; or another location's current value, which
        # may well be zero (status.replicas of a stopped workload)
        return None if value.origin == REPLICAS else 0
    return None if value is _MISSING else numeric(value)


def _finalizers_removed(before: Any, doc: Any) -> bool:
    after = _lookup(doc, FINALIZERS)
    if after is _MISSING:
        return before is not _MISSING
    if after is None or after == []:
        return True
    if isinstance(after, Current):
        return after.origin != FINALIZERS  # replaced by another location's value
    if isinstance(before, list) and isinstance(after, list):
        kept = {id(item) for item in after}
        return any(isinstance(item, Current) and id(item) not in kept for item in before)
    return False


def merge_patch_effect(patch: Any) -> tuple[int | None, bool]:
    """The same for a merge patch, strategic merge patch or apply configuration."""
    if not isinstance(patch, dict):
        return None, False
    replicas = None
    spec = patch.get("spec")
    if isinstance(spec, dict) and "replicas" in spec:
        replicas = numeric(spec["replicas"])
    return replicas, _merge_removes_finalizers(patch)


def _merge_removes_finalizers(patch: dict[str, Any]) -> bool:
    if "metadata" in patch and patch["metadata"] is None:
        return True
    meta = patch.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    if "finalizers" in meta and meta["finalizers"] in (None, []):
        return True
    deleted = meta.get("$deleteFromPrimitiveList/finalizers")
    if isinstance(deleted, list) and deleted:
        return True
    replaced = meta.get("$patch") in ("replace", "delete") or patch.get("$patch") == "replace"
    return replaced and not meta.get("finalizers")
