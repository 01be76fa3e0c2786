"""Differential test: the GitHub GraphQL recogniser against graphql-core's own execution.

Hypothesis writes documents with several operations, named and inline fragments,
aliases, ``__typename``, comments, tricky strings, variables with and without defaults
and operation names that select, miss or are absent. The oracle is graphql-core
executing the document against a small schema with GitHub's mutation and input
shapes whose resolvers record each call and its coerced arguments: what a server built
on the reference implementation runs. The recogniser's action and readings must be
exactly those calls, classed the same way:

* when the spec selects an operation (GetOperation), the calls of executing it;
* when the spec makes selection a request error (several operations and no name, a
  name no operation or two operations have), the calls of executing each operation
  alone (the recogniser decides every operation; a conforming server runs none);
* ``variables`` sent as a JSON string: the calls with those variables and without any.

``@skip``/``@include`` are deliberately judged as if absent (stricter than a server),
so the oracle executes the document with its directives left out. Documents stay
within what GitHub's schema validation would accept in this respect: fragments spread
into mutations are on ``Mutation``, and required inputs are literals or provided.

``GUARDPROXY_HYPOTHESIS_EXAMPLES`` raises the number of examples (CI runs a short slice).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from graphql import build_schema, execute_sync, get_operation_ast, parse
from graphql.language import DocumentNode, OperationDefinitionNode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from recognise_support import http

from guardproxy.action import Verb
from guardproxy.recognise.providers.github.graphql_http import read_graphql
from guardproxy.recognise.providers.github.mutations import ZERO_OID, judge_mutation
from guardproxy.recognise.providers.github.recogniser import recognise_github

EXAMPLES = int(os.environ.get("GUARDPROXY_HYPOTHESIS_EXAMPLES", "150"))

SCHEMA = build_schema(
    """
    type Query { viewer: String, node(id: ID!): String }
    type Payload { clientMutationId: String }
    input DeleteRefInput { refId: ID!, clientMutationId: String }
    input UpdateRefInput { refId: ID!, oid: String!, force: Boolean }
    input RefUpdate { name: String!, afterOid: String!, force: Boolean }
    input UpdateRefsInput { repositoryId: ID!, refUpdates: [RefUpdate!]! }
    input UpdateBranchProtectionRuleInput {
      branchProtectionRuleId: ID!, allowsForcePushes: Boolean, isAdminEnforced: Boolean
    }
    input AddCommentInput { subjectId: ID!, body: String! }
    type Mutation {
      deleteRef(input: DeleteRefInput!): Payload
      updateRef(input: UpdateRefInput!): Payload
      updateRefs(input: UpdateRefsInput!): Payload
      updateBranchProtectionRule(input: UpdateBranchProtectionRuleInput!): Payload
      addComment(input: AddCommentInput!): Payload
    }
    """
)
BOOLEAN_VARIABLES = ("v0", "v1", "v2")

Judged = tuple[str, Verb, tuple[str, ...], str]
"""(operation, verb, risk tags without the ambiguity ones, ref name)."""


class Recorder:
    """Mutation resolvers that record (field, arguments) in execution order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        mutation = SCHEMA.mutation_type
        assert mutation is not None
        for name, definition in mutation.fields.items():
            definition.resolve = self._resolver(name)

    def _resolver(self, name: str) -> Any:
        def resolve(_root: Any, _info: Any, **arguments: Any) -> dict[str, Any]:
            self.calls.append((name, arguments))
            return {}

        return resolve


RECORDER = Recorder()


# ------------------------------------------------------------------ generating documents


@dataclass
class Doc:
    """A document under construction, rendered with or without its directives."""

    draw: st.DrawFn
    aliases: int = 0
    unaliased: set[str] = field(default_factory=set)
    uses_input_variable: bool = False

    def alias(self, name: str) -> str:
        if name not in self.unaliased and self.draw(st.booleans()):
            self.unaliased.add(name)
            return ""
        self.aliases += 1
        return f"a{self.aliases}: "


def _string(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(["x", "} mutation { deleteRef", "# not a comment", 'q"uote', "ü"]))
    if draw(st.booleans()):
        return '"""' + text.replace('"""', "") + '"""'
    return json.dumps(text, ensure_ascii=draw(st.booleans()))


def _boolean_slot(draw: st.DrawFn, name: str) -> str:
    """``name: <value>`` for an optional Boolean input field, or nothing."""
    choice = draw(st.sampled_from(["absent", "true", "false", "null", *["variable"] * 4]))
    if choice == "absent":
        return ""
    if choice == "variable":
        return f", {name}: ${draw(st.sampled_from(BOOLEAN_VARIABLES))}"
    return f", {name}: {choice}"


def _mutation_field(draw: st.DrawFn, doc: Doc) -> str:
    kind = draw(
        st.sampled_from(
            ["deleteRef", "updateRef", "updateRefInput", "updateRefs", "protection", "comment"]
        )
    )
    ref = draw(st.sampled_from(["R1", "R2"]))
    if kind == "deleteRef":
        body = f'deleteRef(input: {{refId: "{ref}"}})'
    elif kind == "updateRef":
        body = f'updateRef(input: {{refId: "{ref}", oid: "abc"{_boolean_slot(draw, "force")}}})'
    elif kind == "updateRefInput":
        doc.uses_input_variable = True
        body = "updateRef(input: $in)"
    elif kind == "updateRefs":
        updates = []
        for _ in range(draw(st.integers(1, 3))):
            branch = draw(st.sampled_from(["refs/heads/main", "refs/heads/f/x", "refs/tags/v1"]))
            after = draw(st.sampled_from([ZERO_OID, "b" * 40]))
            force = _boolean_slot(draw, "force")
            updates.append(f'{{name: "{branch}", afterOid: "{after}"{force}}}')
        body = f'updateRefs(input: {{repositoryId: "Q", refUpdates: [{", ".join(updates)}]}})'
    elif kind == "protection":
        flags = _boolean_slot(draw, "allowsForcePushes") + _boolean_slot(draw, "isAdminEnforced")
        body = f'updateBranchProtectionRule(input: {{branchProtectionRuleId: "B"{flags}}})'
    else:
        body = f'addComment(input: {{subjectId: "I", body: {_string(draw)}}})'
    name = "updateRef" if kind == "updateRefInput" else body.split("(")[0]
    directive = ""
    if draw(st.integers(0, 5)) == 0:
        directive = draw(st.sampled_from([" @skip(if: true)", " @include(if: false)"]))
        directive += " @include(if: $v0)" if draw(st.booleans()) else ""
    return f"{doc.alias(name)}{body}{{DIRECTIVE:{directive}}} {{ clientMutationId }}"


def _selections(draw: st.DrawFn, doc: Doc, fragments: list[str], depth: int = 0) -> str:
    items: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.integers(0, 9))
        if choice <= 4 or depth > 1:
            items.append(_mutation_field(draw, doc))
        elif choice == 5:
            items.append("__typename")
        elif choice <= 7 and fragments:
            items.append(f"...{draw(st.sampled_from(fragments))}")
        else:
            condition = draw(st.sampled_from(["", "on Mutation "]))
            items.append(f"... {condition}{{ {_selections(draw, doc, fragments, depth + 1)} }}")
    separator = draw(st.sampled_from([" ", ", ", "\n# } query { viewer }\n"]))
    return separator.join(items)


@dataclass(frozen=True)
class Case:
    document: str
    """The document sent (directives in place)."""
    plain: str
    """The same document without its ``@skip``/``@include`` directives: what the oracle runs."""
    operation_name: str | None
    variables: dict[str, Any]
    variables_as_text: bool


def _render(template: str, directives: bool) -> str:
    out: list[str] = []
    rest = template
    while "{DIRECTIVE:" in rest:
        before, _, after = rest.partition("{DIRECTIVE:")
        directive, _, rest = after.partition("}")
        out += [before, directive if directives else ""]
    return "".join(out) + rest


@st.composite
def cases(draw: st.DrawFn) -> Case:
    doc = Doc(draw)
    fragments: list[str] = []
    definitions: list[str] = []
    for index in range(draw(st.integers(0, 2))):
        name = f"F{index}"
        definitions.append(f"fragment {name} on Mutation {{ {_selections(draw, doc, fragments)} }}")
        fragments.append(name)
    operations: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(["", "A", "B", "C"]))
        if draw(st.integers(0, 3)) == 0:
            operations.append(f"query {name} {{ viewer }}" if name else "{ viewer }")
            continue
        variables: list[str] = []
        for variable in BOOLEAN_VARIABLES:
            if draw(st.integers(0, 3)) > 0:
                default = draw(st.sampled_from(["", " = true", " = false", " = null"]))
                variables.append(f"${variable}: Boolean{default}")
        operations.append(
            f"mutation {name}({{VARIABLES}}) {{ {_selections(draw, doc, fragments)} }}"
        )
        operations[-1] = operations[-1].replace(
            "{VARIABLES}", ", ".join(variables) or "$unused: ID"
        )
    provided: dict[str, Any] = {}
    for variable in BOOLEAN_VARIABLES:
        if draw(st.booleans()):
            provided[variable] = draw(st.sampled_from([True, False, None]))
    if doc.uses_input_variable:
        # every operation declares $in and a full value is provided (required input)
        operations = [
            o.replace("(", "($in: UpdateRefInput!, ", 1) if o.startswith("mutation") else o
            for o in operations
        ]
        provided["in"] = {"refId": "R9", "oid": "o", "force": draw(st.booleans())}
    names = [
        o.split(" ")[1].split("(")[0] for o in operations if o.startswith(("query ", "mutation "))
    ]
    operation_name = draw(st.sampled_from([None, "Missing", *[n for n in names if n]]))
    parts = draw(st.permutations([*operations, *definitions]))
    template = "\n".join(parts)
    return Case(
        document=_render(template, True),
        plain=_render(template, False),
        operation_name=operation_name,
        variables=provided,
        # without variables a required $in is missing: nothing would run, so not drawn
        variables_as_text=not doc.uses_input_variable and draw(st.integers(0, 4)) == 0,
    )


# ------------------------------------------------------------------ the oracle


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


def _executed(document: DocumentNode, operation: OperationDefinitionNode, variables: Any) -> Any:
    """graphql-core executing ``operation`` alone (with every fragment), calls recorded."""
    fragments = [d for d in document.definitions if not isinstance(d, OperationDefinitionNode)]
    alone = DocumentNode(definitions=(*fragments, operation))
    RECORDER.calls.clear()
    result = execute_sync(SCHEMA, alone, variable_values=variables)
    assert not result.errors, result.errors
    return operation.operation.value, list(RECORDER.calls)


def oracle(case: Case) -> tuple[set[Judged], set[tuple[str, str]], bool]:
    """(judged actions, (field, arguments) calls, whether selection was a request error)."""
    document = parse(case.plain)
    operations = _operations(document)
    chosen = get_operation_ast(document, case.operation_name)
    named = [o for o in operations if o.name and o.name.value == case.operation_name]
    ambiguous = chosen is None or (case.operation_name is not None and len(named) != 1)
    selected = operations if ambiguous else [chosen]
    variable_sets = [case.variables, {}] if case.variables_as_text else [case.variables]
    judged: set[Judged] = set()
    calls: set[tuple[str, str]] = set()
    for operation in selected:
        assert operation is not None
        for variables in variable_sets:
            kind, recorded = _executed(document, operation, variables)
            if kind != "mutation":
                judged.add((f"graphql:{kind}", Verb.READ, (), ""))
                continue
            if not recorded:
                judged.add(("graphql:mutation", Verb.READ, (), ""))
            actions = [j for name, args in recorded for j in judge_mutation(name, args)]
            bulk = sum(1 for j in actions if j.verb in (Verb.DELETE, Verb.DESTROY)) > 1
            for j in actions:
                tags = tuple(
                    sorted({*j.tags, *(["bulk"] if bulk and j.verb is Verb.DELETE else [])})
                )
                judged.add((j.operation, j.verb, tags, j.ref))
            calls |= {(name, json.dumps(args, sort_keys=True)) for name, args in recorded}
    return judged, calls, ambiguous


# ------------------------------------------------------------------ the comparison


def _request(case: Case) -> Any:
    variables: Any = json.dumps(case.variables) if case.variables_as_text else case.variables
    payload = {"query": case.document, "operationName": case.operation_name, "variables": variables}
    headers = {"content-type": "application/json"}
    return http("POST", "/graphql", host="api.github.com", port=443, headers=headers,
                body=json.dumps(payload).encode())  # fmt: skip


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases())
def test_recogniser_decides_exactly_what_graphql_core_executes(case: Case) -> None:
    expected, calls, ambiguous = oracle(case)
    request = _request(case)
    action = recognise_github(request)
    decided = {
        (
            a.operation,
            a.verb,
            tuple(t for t in a.risk_tags if not t.startswith("ambiguous:")),
            a.resource.name,
        )
        for a in action.all_readings()
    }
    assert decided == expected, case
    assert ("ambiguous:graphql-operation" in action.risk_tags) is ambiguous
    # the arguments themselves, field by field
    read = read_graphql(request)
    resolved = {
        (f.name, json.dumps(f.arguments, sort_keys=True))
        for e in read.executions
        if e.operation == "mutation"
        for f in e.fields
    }
    assert resolved == calls, case


def test_oracle_sees_skip_directives() -> None:
    """The oracle is not blind: graphql-core does skip a ``@skip(if: true)`` field, which
    is why the comparison runs it on the document without directives."""
    document = parse(
        'mutation { deleteRef(input: {refId: "R"}) @skip(if: true) { c: clientMutationId } }'
    )
    [operation] = _operations(document)
    assert _executed(document, operation, {}) == ("mutation", [])
