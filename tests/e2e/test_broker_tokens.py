"""Azure and Terraform Cloud brokered: the same bearer swap. The session holds a
placeholder (``AZURE_ACCESS_TOKEN``, ``TF_TOKEN_<host>``); the guard swaps in the user's
real token (``az account get-access-token``, here an ``az`` stand-in printing the same
JSON as the real one, since az is not installed; ``TF_TOKEN_*`` or terraform login's
credentials file) for the configured hosts; the fake APIs answer only the real tokens.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .broker_fixtures import brokered_run, leaked, make_user, write_config
from .guard_fixtures import describe
from .token_fakes import BearerApi

pytestmark = pytest.mark.slow

REAL_AZURE = "eyJ0eXAiOiJKV1QiREALazureAccessToken.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQ.REALsig"
REAL_TFC = "REALtfcToken0000.atlasv1.REALREALREALREALREALREALREALREALREALREALREALREALREALREAL"

AZ = """#!{python}
import json, sys, time
assert sys.argv[1:4] == ["account", "get-access-token", "--resource"], sys.argv
print(json.dumps({{"accessToken": {token!r}, "expires_on": int(time.time()) + 3600,
                  "tokenType": "Bearer", "subscription": "00000000-0000-0000-0000-000000000000"}}))
"""

CALL = """
curl -s -o /dev/null -w '%{{http_code}} ' -H "Authorization: Bearer ${var}" "$URL/api/x"
curl -s -o /dev/null -w '%{{http_code}} ' --noproxy '*' -H "Authorization: Bearer ${var}" \
    "$URL/api/x"
echo; echo ===; env
"""


@pytest.fixture
def azure() -> Iterator[BearerApi]:
    with BearerApi((REAL_AZURE,)) as server:
        yield server


@pytest.fixture
def tfc() -> Iterator[BearerApi]:
    with BearerApi((REAL_TFC,)) as server:
        yield server


def test_azure_tokens_from_az_are_swapped_in(azure: BearerApi, tmp_path: Path) -> None:
    user = make_user(tmp_path / "home")
    az = user.write("bin/az", AZ.format(python=sys.executable, token=REAL_AZURE), mode=0o755)
    user.environ["PATH"] = f"{az.parent}:{user.environ['PATH']}"
    user.secrets.append(REAL_AZURE)
    config = write_config(tmp_path / "guardproxy.yaml",
                          {"azure": {"hosts": [f"127.0.0.1:{azure.port}"]}})  # fmt: skip
    proc = brokered_run(user, tmp_path / "guard", config,
                        ["sh", "-c", CALL.format(var="AZURE_ACCESS_TOKEN")],
                        env={"URL": azure.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    codes, environment = proc.stdout.split("===\n")
    assert codes.split() == ["200", "401"]  # through the guard; around it
    assert leaked(environment, user) == [] and "AZURE_ACCESS_TOKEN=gpb_azure_" in environment


@pytest.mark.parametrize("source", ["environment", "credentials file"])
def test_terraform_cloud_tokens_are_swapped_in(
    tfc: BearerApi,
    tmp_path: Path,
    source: str,
) -> None:
    user = make_user(tmp_path / "home")
    if source == "environment":
        user.environ["TF_TOKEN_app_terraform_io"] = REAL_TFC
    else:
        login = {"credentials": {"app.terraform.io": {"token": REAL_TFC}}}
        user.write(".terraform.d/credentials.tfrc.json", json.dumps(login))
    user.secrets.append(REAL_TFC)
    config = write_config(tmp_path / "guardproxy.yaml", {
        "terraform": {"hosts": ["app.terraform.io", f"127.0.0.1:{tfc.port}"]}})  # fmt: skip
    proc = brokered_run(user, tmp_path / "guard", config,
                        ["sh", "-c", CALL.format(var="TF_TOKEN_app_terraform_io")],
                        env={"URL": tfc.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    codes, environment = proc.stdout.split("===\n")
    assert codes.split() == ["200", "401"]
    assert leaked(environment, user) == []
    assert "TF_TOKEN_app_terraform_io=gpb_terraform_" in environment
