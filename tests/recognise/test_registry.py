"""The provider registry: every provider is its module, and its module is all it takes.

A tiny provider written here (a "widget service": projects holding widgets) is
registered in place of Terraform Cloud's module, and every layer picks it up from the
registry alone: dispatch claims by it, the recogniser is its, the gate answers in its
error format, environment selectors and its name heuristic resolve its actions (by
every spelling of its host), session history sees its containers, the name cache
learns from its responses, the destructive catalogue lists its examples; and nothing
of Terraform Cloud is left anywhere while it is replaced. (A provider that is new
rather than replacing one also needs its name in ``guardproxy.action.Provider``: the
vocabulary of actions and policies, below the registry; the context's counts follow
it, which the last tests check.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

import pytest
from recognise_support import http

from guardproxy.action import Action, Confidence, Environment, Provider, Resource, Scope, Verb
from guardproxy.context import ProviderCounts
from guardproxy.gate.responses import native_answer
from guardproxy.hosts import canonical_host
from guardproxy.recognise import RecogniseSettings, dispatch, dispatch_reason, recognise
from guardproxy.recognise.catalogue import catalogue, catalogued_providers
from guardproxy.recognise.common import actor_of, resource_key, summary_of
from guardproxy.recognise.examples import example_request
from guardproxy.recognise.providers import PROVIDERS, k8s, tfc
from guardproxy.recognise.registry import (
    Claim,
    Containers,
    Example,
    HostKey,
    NativeError,
    ProviderModule,
    Registry,
    ResponseNames,
    Selectors,
    Spelling,
)
from guardproxy.recognise.request import HttpRequest
from guardproxy.session.history import destroyed_container, enclosing_containers
from guardproxy.session.names import NameCache, learner_for, resolve

HOST = "widgets.example"

# ------------------------------------------------------------------ the tiny provider


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return canonical_host(request.host) == HOST


def _reason(request: HttpRequest) -> str:
    return f"{request.host} is the widget service"


def _recognise(request: HttpRequest) -> Action:
    """``/projects/<p>`` and ``/projects/<p>/widgets[/<id>]``; DELETE of a project
    destroys it, of a widget deletes it, GET reads."""
    parts = request.path_only.strip("/").split("/")
    project = parts[1]
    if len(parts) == 2:
        rtype, name, ident, operation = "widgets:project", project, "", "projects"
    else:
        ident = parts[3] if len(parts) > 3 else ""
        rtype, name, operation = "widgets:widget", "", "widgets"
    if request.method == "DELETE":
        verb = Verb.DESTROY if rtype == "widgets:project" else Verb.DELETE
        operation += ".delete"
    else:
        verb, operation = Verb.READ, operation + (".get" if ident or name else ".list")
    key = resource_key("widgets", [project], rtype, name or ident)
    return Action(
        provider=Provider.TFC,
        service="widgets",
        operation=operation,
        verb=verb,
        resource=Resource(type=rtype, id=ident, name=name, key=key),
        scope=Scope(project=project),
        actor=actor_of(request),
        request=summary_of(request),
        confidence=Confidence.EXACT,
    )


def _error(request: HttpRequest, action: Action, message: str, reference: str) -> NativeError:
    return NativeError("text/plain", f"widgets says no: {message}".encode())


def _selectors(action: Action, spell: Spelling) -> list[str]:
    host = spell(action.request.host)
    return [f"widget:{host}/{action.scope.project}", f"widget:{host}"]


def _names(action: Action) -> list[str]:
    return [action.scope.project]


def _destroyed(action: Action) -> str:
    return (
        f"widget:project/{action.resource.name}"
        if action.resource.type == "widgets:project"
        else ""
    )


def _enclosing(action: Action) -> list[str]:
    return (
        [f"widget:project/{action.scope.project}"]
        if action.resource.type == "widgets:widget"
        else []
    )


def _listed(body: bytes) -> list[tuple[str, dict[str, str]]]:
    return [(w["id"], w["tags"]) for w in json.loads(body)]


def _id_key(scope: Scope, ident: str) -> str:
    return f"widget:{scope.project}/{ident}"


def _name_key(scope: Scope, name: str) -> str:
    return resource_key("widgets", [scope.project], "widgets:widget", name)


def _destructive() -> Iterator[Example]:
    yield Example("widgets:projects.delete", example_request("DELETE", HOST, "/projects/calc"))


WIDGETS = ProviderModule(
    provider=Provider.TFC,
    recognise=_recognise,
    claims=(Claim(115, "widgets", _claims, _reason),),
    error=_error,
    selectors=Selectors(_selectors, host_keys=(HostKey("widget:"),), names=_names),
    containers=Containers(destroyed=_destroyed, enclosing=_enclosing),
    names=(
        ResponseNames(
            resource_type="widgets:widget",
            id_prefix="w-",
            operations=frozenset({("widgets", "widgets.list")}),
            parse=_listed,
            id_key=_id_key,
            name_key=_name_key,
        ),
    ),
    destructive=_destructive,
)

TERRAFORM = http(
    "DELETE",
    "/api/v2/workspaces/ws-1",
    host="app.terraform.io",
    port=443,
    headers={"Content-Type": "application/vnd.api+json"},
)
NONE = RecogniseSettings()


def widget(method: str, path: str, host: str = HOST) -> HttpRequest:
    return http(method, path, host=host, port=443)


@pytest.fixture
def widgets() -> Iterator[None]:
    with PROVIDERS.registered(WIDGETS):
        yield


# ------------------------------------------------------------------ every layer reads it


@pytest.mark.usefixtures("widgets")
def test_dispatch_claims_by_the_module() -> None:
    request = widget("DELETE", "/projects/shop")
    assert dispatch(request, NONE) is Provider.TFC
    assert dispatch_reason(request, NONE) == (Provider.TFC, "widgets.example is the widget service")
    action = recognise(request, NONE)
    assert (action.service, action.operation, action.verb) == (
        "widgets",
        "projects.delete",
        Verb.DESTROY,
    )
    # by every spelling of its host (the claim compares canonical hosts)
    spelled = recognise(widget("DELETE", "/projects/shop", host="WIDGETS.Example."), NONE)
    assert (spelled.provider, spelled.operation, spelled.resource.key) == (
        Provider.TFC,
        "projects.delete",
        action.resource.key,
    )


@pytest.mark.usefixtures("widgets")
def test_environment_selectors_and_names_are_the_module_s() -> None:
    request = widget("DELETE", "/projects/shop", host="WIDGETS.EXAMPLE.")
    configured = RecogniseSettings(environments={"widget:widgets.example/shop": "prod"})
    assert recognise(request, configured).environment is Environment.PROD
    by_host = RecogniseSettings(environments={"widget:Widgets.Example": "staging"})
    assert recognise(request, by_host).environment is Environment.STAGING
    assert recognise(widget("DELETE", "/projects/prod-shop"), NONE).environment is Environment.PROD
    assert recognise(request, NONE).environment is Environment.UNKNOWN


@pytest.mark.usefixtures("widgets")
def test_the_gate_answers_in_the_module_s_format() -> None:
    request = widget("DELETE", "/projects/shop")
    answer = native_answer(
        request, recognise(request, NONE), "held", decision="hold", reference="h-1"
    )
    assert (answer.status, answer.body) == (403, b"widgets says no: held")
    assert ("Content-Type", "text/plain") in answer.headers
    assert ("X-Guardproxy-Decision", "hold") in answer.headers


@pytest.mark.usefixtures("widgets")
def test_history_sees_the_module_s_containers() -> None:
    destroy = recognise(widget("DELETE", "/projects/shop"), NONE)
    assert destroyed_container(destroy) == "widget:project/shop"
    inside = recognise(widget("DELETE", "/projects/shop/widgets/w-1"), NONE)
    assert enclosing_containers(inside) == ["widget:project/shop"]
    assert destroyed_container(inside) == ""


@pytest.mark.usefixtures("widgets")
def test_the_name_cache_learns_from_the_module_s_responses() -> None:
    cache = NameCache()
    listing = recognise(widget("GET", "/projects/shop/widgets"), NONE)
    learner = learner_for(listing, cache)
    assert learner is not None
    body = [{"id": "w-1", "tags": {"Name": "front-door", "env": "prod"}}]
    learner(json.dumps(body).encode())
    learner(b"")  # the end of the stream
    delete = recognise(widget("DELETE", "/projects/shop/widgets/w-1"), NONE)
    resolved = resolve(delete, cache)
    assert (resolved.resource.name, resolved.environment) == ("front-door", Environment.PROD)
    assert resolved.resource.key == _name_key(delete.scope, "front-door")
    assert learner_for(delete, cache) is None


@pytest.mark.usefixtures("widgets")
def test_the_catalogue_lists_the_module_s_examples() -> None:
    entries = catalogue(Environment.PROD, {Provider.TFC})
    assert [(e.label, e.action.verb, e.action.environment) for e in entries] == [
        ("widgets:projects.delete", Verb.DESTROY, Environment.PROD)
    ]


@pytest.mark.usefixtures("widgets")
def test_nothing_of_the_replaced_module_is_left() -> None:
    assert dispatch(TERRAFORM, NONE) is Provider.UNKNOWN
    assert recognise(TERRAFORM, NONE).verb is Verb.UNKNOWN


def test_the_registered_module_comes_back() -> None:
    with PROVIDERS.registered(WIDGETS):
        pass
    assert PROVIDERS.get(Provider.TFC) is tfc.PROVIDER
    assert dispatch(TERRAFORM, NONE) is Provider.TFC
    assert dispatch(widget("DELETE", "/projects/shop"), NONE) is Provider.UNKNOWN
    answer = native_answer(
        TERRAFORM, recognise(TERRAFORM, NONE), "no", decision="deny", reference="d"
    )
    assert ("Content-Type", "application/vnd.api+json") in answer.headers


# ------------------------------------------------------------------ the registry itself


def test_every_provider_has_exactly_one_module() -> None:
    registered = [m.provider for m in PROVIDERS]
    assert sorted(registered) == sorted(p for p in Provider if p is not Provider.UNKNOWN)
    assert len(set(registered)) == len(registered)


def test_the_context_counts_every_provider_in_the_enum_s_order() -> None:
    """The counts' JSON field order is the enum's: input hashes depend on it."""
    assert list(ProviderCounts.model_fields) == [p.value for p in Provider]
    assert ProviderCounts().model_dump_json() == (
        '{"aws":0,"k8s":0,"gcp":0,"azure":0,"github":0,"git":0,"tfc":0,"docker":0,"sql":0,'
        '"unknown":0}'
    )


def test_claims_are_asked_most_certain_first() -> None:
    order = [claim.name for claim, _ in PROVIDERS.claims]
    assert order == [
        "kube-host", "sigv4", "git", "sql", "gcp", "azure", "github", "k8s", "presigned",
        "aws-host", "tfc", "docker",
    ]  # fmt: skip
    assert [m.provider for _, m in PROVIDERS.fallbacks] == [
        Provider.K8S,
        Provider.DOCKER,
        Provider.AWS,
    ]


def test_reports_list_providers_in_registration_order() -> None:
    assert catalogued_providers() == (
        Provider.AWS, Provider.K8S, Provider.GITHUB, Provider.GCP, Provider.AZURE,
        Provider.TFC, Provider.DOCKER, Provider.SQL,
    )  # fmt: skip


def test_a_registry_refuses_what_it_cannot_order() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        Registry((tfc.PROVIDER, tfc.PROVIDER))
    with pytest.raises(ValueError, match="share a priority"):
        Registry(
            (k8s.PROVIDER, replace(WIDGETS, claims=(replace(WIDGETS.claims[0], priority=10),)))
        )
    with pytest.raises(ValueError, match="unknown provider"):
        Registry((replace(WIDGETS, provider=Provider.UNKNOWN),))


def test_registered_is_undone_when_the_test_fails() -> None:
    with pytest.raises(RuntimeError), PROVIDERS.registered(WIDGETS):
        raise RuntimeError("a failing test")
    assert PROVIDERS.get(Provider.TFC) is tfc.PROVIDER


def test_a_provider_with_no_error_body_answers_in_guardproxy_s_own_json() -> None:
    bare = ProviderModule(provider=Provider.TFC, recognise=_recognise, claims=WIDGETS.claims)
    with PROVIDERS.registered(bare):
        request = widget("DELETE", "/projects/shop")
        answer = native_answer(
            request, recognise(request, NONE), "no", decision="deny", reference="d-2"
        )
    assert json.loads(answer.body) == {"error": "guardproxy", "message": "no", "id": "d-2"}
