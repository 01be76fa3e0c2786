"""terraform 1.11 with the real hashicorp/aws provider, through guardproxy, against moto.

Go never proxies loopback destinations, so terraform reaches moto through one of
guardproxy's reverse listeners: the provider's endpoints point at that listener, which
forwards to moto.  The provider comes from the local filesystem mirror in
``/opt/tf-plugins``; nothing is downloaded.

The resource is an S3 bucket named ``prod-assets`` (prod by its name); S3 DeleteBucket
is destroy-class, so ``terraform destroy`` and ``terraform apply -replace`` must stop
at guardproxy before anything is deleted.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from guardproxy.config import ReverseListener

from .conftest import require_binary
from .guard_fixtures import Guard, StartGuard, describe, free_port, hold_id_in, run_client
from .servers import MotoServer

pytestmark = pytest.mark.slow

PLUGIN_MIRROR = Path("/opt/tf-plugins")
PROVIDER = "registry.terraform.io/hashicorp/aws"
BUCKET = "prod-assets"
ADDRESS = "aws_s3_bucket.assets"
TF_TIMEOUT = 150.0

CLI_CONFIG = f"""
provider_installation {{
  filesystem_mirror {{
    path    = "{PLUGIN_MIRROR}"
    include = ["{PROVIDER}"]
  }}
  direct {{
    exclude = ["{PROVIDER}"]
  }}
}}
"""


def configuration(endpoint: str) -> str:
    """One prod bucket; every endpoint the provider may call goes to the reverse listener."""
    return f"""
terraform {{
  required_providers {{
    aws = {{ source = "hashicorp/aws" }}
  }}
}}

provider "aws" {{
  region                      = "us-east-1"
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {{
    s3  = "{endpoint}"
    sts = "{endpoint}"
    iam = "{endpoint}"
  }}
}}

resource "aws_s3_bucket" "assets" {{
  bucket = "{BUCKET}"
}}
"""


class Terraform:
    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_client(
            ["terraform", *args, "-input=false", "-no-color"],
            self.env,
            cwd=self.work,
            timeout=TF_TIMEOUT,
        )


@pytest.fixture
def terraform(tmp_path: Path, aws_environ: dict[str, str]) -> Terraform:
    require_binary("terraform")
    if not any(
        PLUGIN_MIRROR.glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")
    ):
        pytest.skip(f"no hashicorp/aws provider in the filesystem mirror {PLUGIN_MIRROR}")
    cli_config = tmp_path / "terraform.rc"
    cli_config.write_text(CLI_CONFIG)
    work = tmp_path / "stack"
    work.mkdir()
    env = {
        k: v
        for k, v in aws_environ.items()
        if not k.startswith("TF_") and k.lower() not in ("http_proxy", "https_proxy", "no_proxy")
    }
    env.update(
        TF_CLI_CONFIG_FILE=str(cli_config),
        TF_DATA_DIR=str(tmp_path / "tf-data"),
        TF_IN_AUTOMATION="1",
        CHECKPOINT_DISABLE="1",
        HOME=str(tmp_path / "tf-home"),
    )
    os.makedirs(env["HOME"], exist_ok=True)
    return Terraform(work, env)


def bucket_created_at(moto: MotoServer) -> datetime | None:
    """The bucket's creation time at moto (direct, no proxy), or None if it is gone."""
    s3 = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=moto.url, config=Config(proxies={}))
    buckets = {b["Name"]: b["CreationDate"] for b in s3.list_buckets()["Buckets"]}
    return buckets.get(BUCKET)


def deletes_at(moto: MotoServer) -> list[str]:
    return [r.target for r in moto.requests if r.method == "DELETE"]


def assert_held_before_delete(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, describe(proc)
    assert f"{ADDRESS}: Destroying... [id={BUCKET}]" in proc.stdout, describe(proc)
    assert f"Error: deleting S3 Bucket ({BUCKET}): operation error S3: DeleteBucket" in (
        proc.stderr
    ), describe(proc)
    assert "StatusCode: 403" in proc.stderr and "api error AccessDenied: guardproxy:" in (
        proc.stderr
    ), describe(proc)
    assert "held for human approval" in proc.stderr, describe(proc)
    return hold_id_in(proc.stderr)


@pytest.mark.timeout(420)
def test_terraform_destroy_and_replace_are_held_before_anything_is_deleted(
    terraform: Terraform, start_guard: StartGuard, moto_server: MotoServer
) -> None:
    port = free_port()
    guard: Guard = start_guard(
        hold_window_seconds=2,
        reverse=[ReverseListener(port=port, upstream=moto_server.url)],
    )
    (terraform.work / "main.tf").write_text(configuration(f"http://127.0.0.1:{port}"))

    init = terraform("init")
    assert init.returncode == 0, describe(init)

    applied = terraform("apply", "-auto-approve")
    assert applied.returncode == 0, describe(applied)
    assert "Apply complete! Resources: 1 added, 0 changed, 0 destroyed." in applied.stdout
    created = bucket_created_at(moto_server)
    assert created is not None
    assert any(r.method == "PUT" and r.path == f"/{BUCKET}" for r in moto_server.requests)
    creates = [d for d in guard.decisions() if d.operation == "CreateBucket"]
    assert [(d.outcome, d.environment) for d in creates] == [("allow", "prod")]

    destroyed = terraform("destroy", "-auto-approve")
    hold_id = assert_held_before_delete(destroyed)
    assert deletes_at(moto_server) == []
    assert bucket_created_at(moto_server) == created

    replaced = terraform("apply", f"-replace={ADDRESS}", "-auto-approve")
    assert "-/+ destroy and then create replacement" in replaced.stdout, describe(replaced)
    # the retry of the identical DeleteBucket joins the pending hold
    assert assert_held_before_delete(replaced) == hold_id
    assert deletes_at(moto_server) == []
    assert bucket_created_at(moto_server) == created, "the bucket must be untouched"
    puts = [r.path for r in moto_server.requests if r.method == "PUT"]
    assert puts == [f"/{BUCKET}"], "only the first apply created anything"

    # one DeleteBucket attempt per run: the provider did not retry the 403
    deletes = [d for d in guard.decisions() if d.operation == "DeleteBucket"]
    assert [(d.outcome, d.hold_id, d.verb) for d in deletes] == [("hold", hold_id, "destroy")] * 2
    assert deletes[0].resource_name == BUCKET and deletes[0].environment == "prod"
    assert "common/hold-prod-destroy" in deletes[0].rules
    assert guard.hold(hold_id)["state"] == "pending"
