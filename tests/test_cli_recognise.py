"""`guardproxy recognise`: a raw request in, its Action out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guardproxy.cli.main import main

RAW = (
    "POST https://cloudformation.us-east-1.amazonaws.com/ HTTP/1.1\r\n"
    "Content-Type: application/x-www-form-urlencoded\r\n"
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261125/us-east-1/"
    "cloudformation/aws4_request, SignedHeaders=host, Signature=abc\r\n"
    "\r\n"
    "Action=DeleteStack&StackName=prod-calc&Version=2010-05-15"
)


def test_a_raw_request_becomes_an_action(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "delete.http"
    request.write_text(RAW)
    assert main(["recognise", "--request", str(request), "--explain"]) == 0
    out, err = capsys.readouterr()
    action = json.loads(out)
    assert (action["provider"], action["operation"], action["verb"]) == (
        "aws", "DeleteStack", "destroy",
    )  # fmt: skip
    assert action["resource"]["name"] == "prod-calc"
    assert action["environment"] == "prod"
    assert "SigV4-signed for cloudformation" in err
    assert "abc" not in out  # the signature is not kept


def test_a_json_request_with_a_path_and_host_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "delete.json"
    request.write_text(json.dumps({
        "method": "DELETE", "url": "/api/v1/namespaces/prod",
        "headers": {"Host": "k8s.internal:6443", "User-Agent": "kubectl/v1.32.4"},
    }))  # fmt: skip
    argv = ["recognise", "--request", str(request), "--kube-host", "k8s.internal:6443"]
    assert main(argv) == 0
    action = json.loads(capsys.readouterr().out)
    assert (action["provider"], action["operation"], action["resource"]["name"]) == (
        "k8s", "delete", "prod",
    )  # fmt: skip


def test_a_malformed_request_is_reported_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    request = tmp_path / "bad.http"
    request.write_text("DELETE /x HTTP/1.1\r\nHost: example.com\r\nnot a header\r\n\r\n")
    assert main(["recognise", "--request", str(request)]) == 2
    assert "line 3: not a header" in capsys.readouterr().err
