"""A hold's request snapshot shows what would be sent and keeps no credential."""

from __future__ import annotations

import json

from guardproxy.approvals.snapshot import request_snapshot
from guardproxy.recognise.request import HttpRequest

SECRET = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def test_the_snapshot_keeps_the_request_and_drops_the_credentials() -> None:
    body = json.dumps({"name": "prod", "password": "hunter2-hunter2", "replicas": 3}).encode()
    request = HttpRequest(
        method="POST",
        scheme="https",
        host="api.example.com",
        port=443,
        path=f"/v1/things?force=true&token={SECRET}",
        headers=(
            ("authorization", f"Bearer {SECRET}"),
            ("content-type", "application/json"),
            ("x-api-key", "k-123456789"),
        ),
        body=body,
    )
    snapshot = request_snapshot(request)
    text = json.dumps(snapshot)
    for secret in (SECRET, "hunter2-hunter2", "k-123456789"):
        assert secret not in text
    assert snapshot["method"] == "POST"
    assert snapshot["url"].startswith("https://api.example.com/v1/things?force=true&token=")
    assert ["content-type", "application/json"] in snapshot["headers"]
    assert [name for name, _ in snapshot["headers"]] == [
        "authorization",
        "content-type",
        "x-api-key",
    ]
    assert '"replicas":3' in snapshot["body"]["preview"]
    assert snapshot["body"]["size"] == len(body)


def test_an_ipv6_destination_keeps_its_brackets() -> None:
    request = HttpRequest(method="DELETE", scheme="http", host="::1", port=8080, path="/x")
    assert request_snapshot(request)["url"] == "http://[::1]:8080/x"
