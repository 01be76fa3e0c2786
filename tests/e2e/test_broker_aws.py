"""AWS credential brokering end to end: real clients in a `guardproxy run` session hold a
session key only; the guard verifies their signatures and signs again with the user's
real credentials (botocore's chain); a fake AWS in front of moto checks every
signature with the real secret (tests/e2e/aws_verify.py).

Through the guard every tool succeeds; around it (straight to the fake, with whatever
the session holds) every request fails authentication; the session's environment and
the files it is given hold no real credential.
"""

from __future__ import annotations

import calendar
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .aws_verify import KeyRing, RealKey, SigV4Gate
from .broker_fixtures import (
    REAL_DEFAULT,
    REAL_PROD,
    User,
    brokered_run,
    leaked,
    make_user,
    write_config,
)
from .conftest import require_binary
from .guard_fixtures import describe, read_decisions, without_log_lines
from .pki import ThrowawayPki
from .servers import MotoServer
from .test_clients_terraform import CLI_CONFIG, PLUGIN_MIRROR, loopback_name

pytestmark = pytest.mark.slow


class FakeAws:
    """moto behind a signature check that knows only the real keys."""

    def __init__(self, server: MotoServer, gate: SigV4Gate) -> None:
        self.server = server
        self.gate = gate

    @property
    def url(self) -> str:
        return self.server.url

    def keys_used(self) -> set[str]:
        return {v.access_key for v in self.gate.verdicts if v.ok}

    def refusals(self) -> list[str]:
        return [v.code for v in self.gate.verdicts if not v.ok]


def fake_aws(ring: KeyRing, pki: ThrowawayPki | None = None) -> Iterator[FakeAws]:
    made: list[SigV4Gate] = []

    def wrap(app: object) -> SigV4Gate:
        made.append(SigV4Gate(app, ring, scheme="https" if pki else "http"))  # type: ignore[arg-type]
        return made[0]

    context = None
    if pki is not None:
        from ._http import server_tls_context  # noqa: PLC0415

        context = server_tls_context(pki, None, require_client_cert=False)
        context.set_alpn_protocols(["http/1.1"])
    with MotoServer(wrap=wrap, ssl_context=context) as server:
        server.reset()
        yield FakeAws(server, made[0])
        server.reset()


@pytest.fixture
def ring() -> KeyRing:
    keys = KeyRing()
    keys.add(REAL_DEFAULT)
    keys.add(REAL_PROD)
    return keys


@pytest.fixture
def aws(ring: KeyRing) -> Iterator[FakeAws]:
    yield from fake_aws(ring)


@pytest.fixture
def user(tmp_path: Path) -> User:
    return make_user(tmp_path / "home")


def aws_config(tmp_path: Path, aws: FakeAws, **extra: object) -> Path:
    hosts = [f"127.0.0.1:{aws.server.port}"]
    name = loopback_name()
    if name is not None:
        hosts.append(f"{name}:{aws.server.port}")
    brokers = {"aws": {"profiles": {"default": "", "prod": "prod-admin"}, "hosts": hosts}}
    return write_config(tmp_path / "guardproxy.yaml", brokers, **extra)


CLI_SCRIPT = """
set -e
aws --endpoint-url "$URL" s3api create-bucket --bucket brokered >/dev/null
echo 'hello through the guard' > "$WORK/f"
aws --endpoint-url "$URL" s3 cp "$WORK/f" s3://brokered/k >/dev/null
aws --endpoint-url "$URL" s3api list-objects-v2 --bucket brokered --query 'Contents[].Key' \
    --output text
aws --endpoint-url "$URL" --profile prod sts get-caller-identity --output text
url=$(aws --endpoint-url "$URL" s3 presign s3://brokered/k --expires-in 300)
curl -sS --fail "$url"
"""


def test_the_aws_cli_works_through_the_guard_with_brokered_credentials(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    aws_bin = require_binary("aws")
    require_binary("curl")
    work = tmp_path / "work"
    work.mkdir()
    proc = brokered_run(
        user, tmp_path / "guard", aws_config(tmp_path, aws), ["sh", "-c", CLI_SCRIPT],
        env={"URL": aws.url, "WORK": str(work), "PATH": f"{Path(aws_bin).parent}:"
             + user.environ["PATH"]},
    )  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert "hello through the guard" in proc.stdout
    assert proc.stdout.splitlines()[0].strip() == "k"
    assert aws.refusals() == [], describe(proc)
    # header auth with the default profile's temporary key, the prod profile's own key,
    # and the presigned GET: all signed by the guard with the real keys
    assert aws.keys_used() == {REAL_DEFAULT.access_key, REAL_PROD.access_key}
    decisions = read_decisions(tmp_path / "guard")
    assert {d.outcome for d in decisions} == {"allow"}
    # five requests decided, the presigned GET too (a SigV2 URL to a loopback endpoint has
    # no credential scope naming S3: it is decided as a plain loopback request)
    assert len(decisions) == 5, [(d.service, d.operation) for d in decisions]
    banner = without_log_lines(proc.stderr)
    assert (
        "credentials brokered by the guard" in banner and "aws (profiles default, prod)" in banner
    )
    assert ".aws/credentials (readable without --enforce)" in banner


BOTO3_SCRIPT = r"""
import json, os, sys, urllib.request
import boto3
from botocore.config import Config

url = os.environ["URL"]
session = boto3.session.Session()
s3 = session.client("s3", endpoint_url=url, region_name="us-east-1")
s3.create_bucket(Bucket="boto")
s3.put_object(Bucket="boto", Key="a b/c.txt", Body=b"payload " * 1000)
body = s3.get_object(Bucket="boto", Key="a b/c.txt")["Body"].read()
presigned = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "a b/c.txt"},
                                      ExpiresIn=120)
opener = urllib.request.build_opener(urllib.request.ProxyHandler())
via_url = opener.open(presigned, timeout=30).read()
cfn = session.client("cloudformation", endpoint_url=url, region_name="us-east-1")
stacks = cfn.describe_stacks()["Stacks"]
ddb = session.client("dynamodb", endpoint_url=url, region_name="us-east-1")
ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                 AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
                 BillingMode="PAY_PER_REQUEST")
prod = boto3.session.Session(profile_name="prod").client("sts", endpoint_url=url,
                                                         region_name="eu-west-1")
who = prod.get_caller_identity()["Arn"]
print(json.dumps({"body": len(body), "via_url": len(via_url), "stacks": len(stacks),
                  "tables": ddb.list_tables()["TableNames"], "who": who}))
"""


def test_boto3_works_through_the_guard_in_every_form(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    proc = brokered_run(user, tmp_path / "guard", aws_config(tmp_path, aws),
                        [sys.executable, "-c", BOTO3_SCRIPT], env={"URL": aws.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["body"] == result["via_url"] == 8000
    assert result["tables"] == ["t"]
    assert aws.refusals() == []
    assert aws.keys_used() == {REAL_DEFAULT.access_key, REAL_PROD.access_key}


AROUND_SCRIPT = r"""
import json, os, urllib.request, urllib.error
import boto3
from botocore.config import Config

url = os.environ["URL"]
results = {}
direct = Config(proxies={})
for name, call in {
    "sts": lambda: boto3.client("sts", endpoint_url=url, region_name="us-east-1",
                                config=direct).get_caller_identity(),
    "s3": lambda: boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                               config=direct).list_buckets(),
}.items():
    try:
        call()
        results[name] = "accepted"
    except Exception as error:
        results[name] = getattr(error, "response", {}).get("Error", {}).get("Code", repr(error))
presigned = boto3.client("s3", endpoint_url=url, region_name="us-east-1").generate_presigned_url(
    "list_buckets", ExpiresIn=60)
try:
    urllib.request.build_opener(urllib.request.ProxyHandler({})).open(presigned, timeout=10)
    results["presigned"] = "accepted"
except urllib.error.HTTPError as error:
    results["presigned"] = error.code
print(json.dumps(results))
"""


def test_around_the_guard_every_request_fails_authentication(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    proc = brokered_run(user, tmp_path / "guard", aws_config(tmp_path, aws),
                        [sys.executable, "-c", AROUND_SCRIPT], env={"URL": aws.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {"sts": "InvalidAccessKeyId", "s3": "InvalidAccessKeyId",
                       "presigned": 403}  # fmt: skip
    assert set(aws.refusals()) == {"InvalidAccessKeyId"}
    assert aws.keys_used() == set()


FORGED_SCRIPT = r"""
import json, os, urllib.request, urllib.error
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

url = os.environ["URL"]
key = os.environ["AWS_ACCESS_KEY_ID"]
out = {}
for name, secret in {"wrong-secret": "not-the-session-secret",
                     "right-secret": os.environ["AWS_SECRET_ACCESS_KEY"]}.items():
    request = AWSRequest("POST", url + "/", data=b"Action=GetCallerIdentity&Version=2011-06-15",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    SigV4Auth(Credentials(key, secret), "sts", "us-east-1").add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(prepared.url, data=prepared.body, method="POST",
                                 headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            out[name] = [answer.status, answer.read().decode()[:80]]
    except urllib.error.HTTPError as error:
        out[name] = [error.code, error.read().decode()]
print(json.dumps(out))
"""


def test_a_request_not_signed_by_the_session_is_refused_before_any_decision(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    proc = brokered_run(user, tmp_path / "guard", aws_config(tmp_path, aws),
                        [sys.executable, "-c", FORGED_SCRIPT], env={"URL": aws.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    status, body = out["wrong-secret"]
    assert status == 403 and "SignatureDoesNotMatch" in body and "<ErrorResponse>" in body
    assert out["right-secret"][0] == 200
    assert aws.refusals() == [] and len(aws.gate.verdicts) == 1  # the forged one never left
    decisions = read_decisions(tmp_path / "guard")
    assert len(decisions) == 1, "the refused request must not have reached a decision"


ENV_SCRIPT = 'env; echo ---; cat "$AWS_SHARED_CREDENTIALS_FILE" "$AWS_CONFIG_FILE"'


def test_the_session_environment_and_its_files_hold_no_real_credential(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    hostile = {"AWS_ACCESS_KEY_ID": REAL_PROD.access_key, "AWS_SECRET_ACCESS_KEY": REAL_PROD.secret,
               "AWS_SESSION_TOKEN": "REALenvToken", "AWS_PROFILE": "prod-admin"}  # fmt: skip
    user.secrets.append("REALenvToken")
    proc = brokered_run(user, tmp_path / "guard", aws_config(tmp_path, aws),
                        ["sh", "-c", ENV_SCRIPT], env=hostile)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert leaked(proc.stdout, user) == []
    variables = dict(line.split("=", 1) for line in proc.stdout.split("---")[0].splitlines()
                     if "=" in line)  # fmt: skip
    assert variables["AWS_ACCESS_KEY_ID"].startswith("GPAK")
    assert "AWS_SESSION_TOKEN" not in variables and "AWS_PROFILE" not in variables
    assert variables["AWS_EC2_METADATA_DISABLED"] == "true"
    files = proc.stdout.split("---")[1]
    assert "[profile prod]\nregion = eu-west-1" in files  # your settings, not your keys


def test_a_held_request_is_signed_at_release_with_a_fresh_date(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    """delete-stack on a prod stack is held; approved after a while, the released request
    reaches AWS signed then, by the real key, dated after the approval."""
    aws_bin = require_binary("aws")
    data_dir = tmp_path / "guard"
    config = aws_config(tmp_path, aws)
    cfn = f'{aws_bin} --endpoint-url "$URL" cloudformation'
    script = (
        f"{cfn} create-stack --stack-name prod-calc --template-body '{TEMPLATE}' >/dev/null && "
        f"{cfn} delete-stack --stack-name prod-calc"
    )
    from .guard_fixtures import guardproxy_cli  # noqa: PLC0415

    argv = [*guardproxy_cli(), "run", "--data-dir", str(data_dir), "--policies",
            str(Path(__file__).resolve().parents[2] / "policies"), "--config", str(config),
            "--hold-window", "60", "--", "sh", "-c", script]  # fmt: skip
    process = subprocess.Popen(argv, env={**user.environ, "URL": aws.url}, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        tokens = _approvers(data_dir, user)
        hold = _pending_hold(data_dir, user, tokens[0])
        time.sleep(2.0)  # the agent's signature is now older than the approval
        approved_at = time.time()
        for token in tokens:
            done = _cli(data_dir, user, "approve", hold, "--reason", "planned", "--token", token)
            assert done.returncode == 0, describe(done)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, f"{out}\n{err}"
    deletes = [r for r in aws.server.requests if b"Action=DeleteStack" in r.body]
    assert len(deletes) == 1
    stamp = dict((k.lower(), v) for k, v in deletes[0].headers)["x-amz-date"]
    signed_at = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))
    assert signed_at >= int(approved_at), (stamp, approved_at)
    assert aws.refusals() == [] and aws.keys_used() == {REAL_DEFAULT.access_key}


TEMPLATE = json.dumps(
    {"AWSTemplateFormatVersion": "2010-09-09",
     "Resources": {"Queue": {"Type": "AWS::SQS::Queue", "Properties": {}}}}
)  # fmt: skip


def _cli(data_dir: Path, user: User, *args: str) -> subprocess.CompletedProcess[str]:
    from .guard_fixtures import guardproxy_cli, run_client  # noqa: PLC0415

    return run_client([*guardproxy_cli(), *args, "--data-dir", str(data_dir)], user.environ)


def _approvers(data_dir: Path, user: User) -> list[str]:
    """Two seniors (the prod teardown rule wants two), added once the store exists."""
    deadline = time.monotonic() + 30
    while not (data_dir / "guardproxy.db").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    tokens = []
    for name in ("alice", "bob"):
        added = _cli(data_dir, user, "approvers", "add", name, "--group", "senior",
                     "--group", "sre-oncall", "--json")  # fmt: skip
        assert added.returncode == 0, describe(added)
        tokens.append(json.loads(added.stdout)["token"])
    return tokens


def _pending_hold(data_dir: Path, user: User, token: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = _cli(data_dir, user, "holds", "--json", "--token", token)
        if listed.returncode == 0:
            holds = json.loads(listed.stdout)["holds"]
            pending = [h for h in holds if h["state"] == "pending"]
            if pending:
                return str(pending[0]["id"])
        time.sleep(0.2)
    raise AssertionError("no hold appeared")


REFRESH_PROCESS = r"""#!{python}
import json, sys, time
from pathlib import Path
issued = Path(sys.argv[1])
n = len(issued.read_text().splitlines()) if issued.exists() else 0
key = {{"Version": 1, "AccessKeyId": f"ASIAREFRESH{{n:09d}}",
       "SecretAccessKey": f"REALrefresh{{n}}", "SessionToken": f"REALrefreshToken{{n}}",
       "Expiration": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3))}}
with issued.open("a") as handle:
    handle.write(json.dumps(key) + "\n")
print(json.dumps(key))
"""


def test_an_expiring_real_credential_is_refreshed_without_the_agent_noticing(
    aws: FakeAws, ring: KeyRing, user: User, tmp_path: Path
) -> None:
    """The real profile's credentials come from a credential_process and live 3 s; the
    fake AWS accepts each key only until it expires. Requests spread over 5 s all pass:
    the guard re-signs each with a key botocore refreshed."""
    issued = tmp_path / "issued.jsonl"
    helper = user.write("bin/issue-credentials", REFRESH_PROCESS.format(python=sys.executable),
                        mode=0o755)  # fmt: skip
    user.write(".aws/config", f"[default]\nregion = us-east-1\ncredential_process = {helper} "
               f"{issued}\n")  # fmt: skip
    user.write(".aws/credentials", "")

    class Issued(KeyRing):
        def get(self, access_key: str) -> RealKey | None:
            for line in issued.read_text().splitlines() if issued.exists() else []:
                key = json.loads(line)
                if key["AccessKeyId"] == access_key:
                    expires = calendar.timegm(
                        time.strptime(key["Expiration"], "%Y-%m-%dT%H:%M:%SZ")
                    )
                    return RealKey(access_key, key["SecretAccessKey"], key["SessionToken"],
                                   expires)  # fmt: skip
            return None

    aws.gate.ring = Issued()
    script = (
        "import boto3, os, time\n"
        "sts = boto3.client('sts', endpoint_url=os.environ['URL'], region_name='us-east-1')\n"
        "for _ in range(6):\n    sts.get_caller_identity(); time.sleep(1)\nprint('ok')\n"
    )
    brokers = {"aws": {"hosts": [f"127.0.0.1:{aws.server.port}"]}}
    config = write_config(tmp_path / "refresh.yaml", brokers)
    proc = brokered_run(user, tmp_path / "guard", config, [sys.executable, "-c", script],
                        env={"URL": aws.url})  # fmt: skip
    assert proc.returncode == 0 and "ok" in proc.stdout, describe(proc)
    assert aws.refusals() == []
    assert len(aws.keys_used()) >= 2, "the real key was never refreshed"


TERRAFORM_CONFIG = """
terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws" }}
  }}
}}
provider "aws" {{
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
    s3  = "{endpoint}"
    sts = "{endpoint}"
  }}
}}
resource "aws_s3_bucket" "assets" {{
  bucket = "brokered-assets"
}}
"""


def test_terraform_works_through_the_guard_with_brokered_credentials(
    aws: FakeAws, user: User, tmp_path: Path
) -> None:
    require_binary("terraform")
    if not any(
        PLUGIN_MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")
    ):
        pytest.skip(f"no hashicorp/aws provider in {PLUGIN_MIRROR}")
    name = loopback_name()
    if name is None:
        pytest.skip("no host name other than localhost resolves to loopback here")
    work = tmp_path / "stack"
    work.mkdir()
    (work / "main.tf").write_text(
        TERRAFORM_CONFIG.format(endpoint=f"http://{name}:{aws.server.port}")
    )
    cli_config = tmp_path / "terraform.rc"
    cli_config.write_text(CLI_CONFIG)
    env = {"TF_CLI_CONFIG_FILE": str(cli_config), "TF_DATA_DIR": str(tmp_path / "tf-data"),
           "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}  # fmt: skip
    from .guard_fixtures import run_client  # noqa: PLC0415

    init = run_client(["terraform", "init", "-input=false", "-no-color"], {**user.environ, **env},
                      cwd=work, timeout=150)  # fmt: skip
    assert init.returncode == 0, describe(init)
    script = f"cd {work} && terraform apply -auto-approve -input=false -no-color"
    proc = brokered_run(user, tmp_path / "guard", aws_config(tmp_path, aws),
                        ["sh", "-c", script], env=env, timeout=150)  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert aws.refusals() == []
    assert aws.keys_used() == {REAL_DEFAULT.access_key}


@pytest.fixture
def aws_tls(ring: KeyRing, pki: ThrowawayPki) -> Iterator[FakeAws]:
    yield from fake_aws(ring, pki)


CHUNKED_SCRIPT = r"""
import json, os
import boto3
s3 = boto3.client("s3", endpoint_url=os.environ["URL"], region_name="us-east-1")
s3.create_bucket(Bucket="chunked")
s3.put_object(Bucket="chunked", Key="k", Body=b"z" * 70000, ChecksumAlgorithm="CRC32")
print(len(s3.get_object(Bucket="chunked", Key="k")["Body"].read()))
"""


def test_boto3_aws_chunked_uploads_over_tls_are_brokered(
    aws_tls: FakeAws, user: User, pki: ThrowawayPki, tmp_path: Path
) -> None:
    """Over HTTPS botocore sends an object with its checksum in a trailer: aws-chunked,
    STREAMING-UNSIGNED-PAYLOAD-TRAILER."""
    ca = tmp_path / "upstream-ca.pem"
    ca.write_bytes(pki.ca.cert_pem)
    config = aws_config(tmp_path, aws_tls, upstream_ca_files=[str(ca)])
    proc = brokered_run(user, tmp_path / "guard", config, [sys.executable, "-c", CHUNKED_SCRIPT],
                        env={"URL": aws_tls.url})  # fmt: skip
    assert proc.returncode == 0, describe(proc)
    assert proc.stdout.strip().splitlines()[-1] == "70000"
    assert aws_tls.refusals() == []
    puts = [r for r in aws_tls.server.requests if r.method == "PUT" and r.path.endswith("/k")]
    modes = {dict((k.lower(), v) for k, v in r.headers).get("x-amz-content-sha256") for r in puts}
    assert modes == {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}, modes
