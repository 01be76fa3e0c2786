"""GCP and Azure previews against loopback fakes of the Cloud Asset API, Compute Engine
and Azure Resource Manager. Their hosts are Google's and Microsoft's, which no test may
reach, so the gatherers are called directly: the action is recognised from the request
as it would be sent (to the real host), the calls go to the fake (the held request's
origin, as for a private endpoint)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from e2e.api_fakes import ApiFake

from guardproxy.action import Action
from guardproxy.impact.access import Access, HttpClient, Origin
from guardproxy.impact.cloud import CLOUD_PREVIEWS
from guardproxy.impact.model import Budget, ImpactError
from guardproxy.recognise import RecogniseSettings, recognise
from guardproxy.recognise.request import HttpRequest

TOKEN = "ya29.agentToken"


@pytest.fixture
def fake() -> Iterator[ApiFake]:
    with ApiFake(TOKEN) as server:
        yield server


def held(host: str, path: str) -> Action:
    request = HttpRequest("DELETE", "https", host, 443, path,
                          (("authorization", f"Bearer {TOKEN}"),), b"", host)  # fmt: skip
    return recognise(request, RecogniseSettings())


def client(fake: ApiFake, seconds: float = 5.0, calls: int = 25) -> HttpClient:
    access = Access(Origin("http", "127.0.0.1", fake.port), held("x.googleapis.com", "/").provider,
                    "the held request's credential",
                    headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    return HttpClient(access, Budget(seconds, calls))


def test_a_project_delete_counts_its_assets_by_type(fake: ApiFake) -> None:
    action = held("cloudresourcemanager.googleapis.com", "/v3/projects/prod-proj")
    assert action.operation == "cloudresourcemanager.projects.delete"
    assets = [{"name": f"//x/{n}", "assetType": t} for n, t in enumerate(
        ["compute.googleapis.com/Instance"] * 3 + ["sqladmin.googleapis.com/Instance"]
        + ["storage.googleapis.com/Bucket"] * 2)]  # fmt: skip
    fake.get("/v1/projects/prod-proj/assets", {"assets": assets})
    facts = CLOUD_PREVIEWS[action.operation](client(fake), action)
    assert facts.impact["resource_types"] == {
        "compute.googleapis.com/Instance": 3, "storage.googleapis.com/Bucket": 2,
        "sqladmin.googleapis.com/Instance": 1,
    }  # fmt: skip
    assert facts.summary.startswith("project prod-proj: 6 resources (3 compute.googleapis.com/")


def test_an_instance_delete_shows_its_disks_and_labels(fake: ApiFake) -> None:
    path = "/compute/v1/projects/p/zones/us-central1-a/instances/web-1"
    action = held("compute.googleapis.com", path)
    fake.get(path, {"kind": "compute#instance", "name": "web-1", "status": "RUNNING",
                    "machineType": ".../machineTypes/e2-small", "labels": {"env": "prod"},
                    "disks": [{"deviceName": "boot", "autoDelete": True},
                              {"deviceName": "data", "autoDelete": False}]})  # fmt: skip
    facts = CLOUD_PREVIEWS[action.operation](client(fake), action)
    assert facts.summary == "RUNNING e2-small; 2 disks (1 deleted with it); labels env=prod"
    assert facts.impact["disks_kept"] == 1


def test_a_resource_group_delete_counts_every_page(fake: ApiFake) -> None:
    action = held("management.azure.com", "/subscriptions/s1/resourcegroups/prod-rg"
                  "?api-version=2021-04-01")  # fmt: skip
    base = "/subscriptions/s1/resourceGroups/prod-rg/resources"
    fake.get(
        base,
        {
            "value": [{"type": "Microsoft.Compute/virtualMachines"}] * 2,
            "nextLink": f"http://127.0.0.1:{fake.port}/next-page?api-version=2021-04-01",
        },
    )
    fake.get("/next-page", {"value": [{"type": "Microsoft.Sql/servers"}]})  # fmt: skip
    facts = CLOUD_PREVIEWS[action.operation](client(fake), action)
    assert facts.impact["resources"] == 3
    assert facts.summary == (
        "resource group prod-rg: 3 resources (2 Microsoft.Compute/virtualMachines, "
        "1 Microsoft.Sql/servers)"
    )


def test_a_failing_or_slow_api_is_an_error_within_the_bound(fake: ApiFake) -> None:
    action = held("management.azure.com", "/subscriptions/s1/resourcegroups/prod-rg"
                  "?api-version=2021-04-01")  # fmt: skip
    with pytest.raises(ImpactError, match="does not exist"):
        CLOUD_PREVIEWS[action.operation](client(fake), action)
    fake.get("/subscriptions/s1/resourceGroups/prod-rg/resources", {"value": []})
    fake.slow = 3.0
    started = time.monotonic()
    with pytest.raises(ImpactError, match="in time"):
        CLOUD_PREVIEWS[action.operation](client(fake, seconds=0.5), action)
    assert time.monotonic() - started < 1.5


def test_not_an_api_answer_is_no_fact(fake: ApiFake) -> None:
    """An answer of another shape (a proxy's page, another service) is never read as
    "nothing there"."""
    action = held("cloudresourcemanager.googleapis.com", "/v3/projects/prod-proj")
    fake.get("/v1/projects/prod-proj/assets", {"path": "/v1/projects", "ok": True})
    with pytest.raises(ImpactError, match="did not answer a list of assets"):
        CLOUD_PREVIEWS[action.operation](client(fake), action)
