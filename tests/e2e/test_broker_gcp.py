"""GCP brokered: gcloud gets a placeholder access token (auth/access_token_file), client
libraries an ADC file whose refresh the guard answers with a placeholder; the guard swaps
in a real access token that google-auth obtains from the user's own Application Default
Credentials. The fake API (tests/e2e/token_fakes.py) answers only the tokens its OAuth
endpoint minted for the user's real refresh token.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .broker_fixtures import User, brokered_run, leaked, make_user, write_config
from .conftest import require_binary
from .guard_fixtures import describe
from .token_fakes import BearerApi

pytestmark = pytest.mark.slow

SERVICE_ACCOUNT = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SERVICE_ACCOUNT_PEM = SERVICE_ACCOUNT.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


@pytest.fixture
def gcp() -> Iterator[BearerApi]:
    public = SERVICE_ACCOUNT.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with BearerApi(service_account_pem=public) as server:
        yield server
        assert not server.handler_errors, server.handler_errors


@pytest.fixture
def user(tmp_path: Path, gcp: BearerApi) -> User:
    """The user's ADC: a service-account key (google-auth honours its token_uri, here the
    fake's token endpoint: nothing goes to Google)."""
    found = make_user(tmp_path / "home", {
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDRESOURCEMANAGER": f"{gcp.url}/",
    })  # fmt: skip
    found.write(".config/gcloud/application_default_credentials.json", json.dumps({
        "type": "service_account", "project_id": "prod-project",
        "private_key_id": "REALkeyId0001", "private_key": SERVICE_ACCOUNT_PEM,
        "client_email": "agent@prod-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"{gcp.url}/token",
    }))  # fmt: skip
    found.secrets += [SERVICE_ACCOUNT_PEM.splitlines()[1], "ya29.REALminted"]
    return found


def gcp_config(tmp_path: Path, gcp: BearerApi) -> Path:
    return write_config(tmp_path / "guardproxy.yaml",
                        {"gcp": {"hosts": [f"127.0.0.1:{gcp.port}"]}})  # fmt: skip


LIBRARY = r"""
import json, os, sys
import google.auth
from google.auth.transport.requests import AuthorizedSession
credentials, project = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
answer = AuthorizedSession(credentials).get(os.environ["URL"] + "/v1/projects/prod-project/zones")
print(json.dumps({"status": answer.status_code, "project": project,
                  "token": credentials.token}))
"""


def test_gcloud_and_the_client_libraries_work_through_the_guard(
    gcp: BearerApi, user: User, tmp_path: Path
) -> None:
    gcloud = require_binary("gcloud")
    program = tmp_path / "library.py"
    program.write_text(LIBRARY)
    script = (
        f"{gcloud} projects list --format='value(projectId)' && echo === && "
        f"{sys.executable} {program} && echo === && env && "
        'cat "$CLOUDSDK_AUTH_ACCESS_TOKEN_FILE" "$GOOGLE_APPLICATION_CREDENTIALS"'
    )
    proc = brokered_run(user, tmp_path / "guard", gcp_config(tmp_path, gcp),
                        ["sh", "-c", script], env={"URL": gcp.url}, timeout=180)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    listed, library, visible = proc.stdout.split("===\n")
    assert listed.split() == ["prod-project"]
    result = json.loads(library.strip().splitlines()[-1])
    assert result["status"] == 200 and result["token"].startswith("gpb_gcp_")
    assert leaked(visible, user) == []
    assert gcp.minted, "the guard never obtained a real token from the user's ADC"
    assert set(gcp.answered()) == {200}


AROUND = r"""
import json, os, urllib.request, urllib.error
token = open(os.environ["CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"]).read().strip()
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
request = urllib.request.Request(os.environ["URL"] + "/v1/projects",
                                 headers={"Authorization": "Bearer " + token})
try:
    opener.open(request, timeout=10)
    print("accepted")
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_around_the_guard_the_session_token_fails_authentication(
    gcp: BearerApi, user: User, tmp_path: Path
) -> None:
    proc = brokered_run(user, tmp_path / "guard", gcp_config(tmp_path, gcp),
                        [sys.executable, "-c", AROUND], env={"URL": gcp.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip().splitlines()[-1] == "401"
