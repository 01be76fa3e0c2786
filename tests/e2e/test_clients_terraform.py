"""terraform 1.11 with the real hashicorp/aws provider, through guardproxy, against moto.

Go never proxies loopback destinations ("localhost" or a loopback IP), so terraform
reaches moto either through one of guardproxy's reverse listeners, or, under
``guardproxy run``, by a host name that is not "localhost" but resolves to a
loopback address (the machine's own name, or another /etc/hosts name): Go proxies
those like any other name.  The provider comes from the local filesystem mirror in
``/opt/tf-plugins``; nothing is downloaded.

The resource is an S3 bucket named ``prod-assets`` (prod by its name); S3 DeleteBucket
is destroy-class, so ``terraform destroy`` and ``terraform apply -replace`` must stop
at guardproxy before anything is deleted.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from guardproxy.config import ReverseListener
from guardproxy.control.client import ControlClient

from .conftest import require_binary
from .guard_fixtures import (
    Guard,
    StartGuard,
    describe,
    free_port,
    guarded_run_command,
    guardproxy_cli,
    hold_id_in,
    run_client,
)
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


# ------------------------------------------------------- through `guardproxy run`


def _is_loopback_name(name: str) -> bool:
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def loopback_name() -> str | None:
    """A host name other than "localhost" that resolves only to loopback addresses."""
    candidates = [socket.gethostname()]
    try:
        for line in Path("/etc/hosts").read_text(encoding="utf-8").splitlines():
            fields = line.split("#", 1)[0].split()
            candidates.extend(fields[1:])
    except OSError:
        pass
    for name in candidates:
        if name and not name.lower().startswith("localhost") and _is_loopback_name(name):
            return name
    return None


class GuardedTerraform:
    """``guardproxy run -- terraform ...`` in the background, each run its own session."""

    def __init__(self, terraform: Terraform, data_dir: Path) -> None:
        self.terraform = terraform
        self.data_dir = data_dir
        self.running: list[subprocess.Popen[str]] = []
        self._tokens: list[str] = []

    @property
    def tokens(self) -> list[str]:
        """alice's and bob's tokens, added once the first run has created the store."""
        if not self._tokens:
            self._tokens = [self._add_approver(name) for name in ("alice", "bob")]
        return self._tokens

    def _add_approver(self, name: str) -> str:
        """A real approver in the guard's store, added as on-call would (the CLI)."""
        added = run_client(
            [*guardproxy_cli(), "approvers", "add", name, "--group", "senior",
             "--group", "sre-oncall", "--data-dir", str(self.data_dir), "--json"],
            self._cli_env(),
        )  # fmt: skip
        assert added.returncode == 0, describe(added)
        token: str = json.loads(added.stdout)["token"]
        return token

    @staticmethod
    def _cli_env() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}

    def start(self, *args: str) -> subprocess.Popen[str]:
        command = guarded_run_command(
            self.data_dir,
            ["terraform", *args, "-input=false", "-no-color"],
            hold_window=120.0,  # the held request waits live while the test approves it
        )
        env = {k: v for k, v in self.terraform.env.items() if not k.startswith("GUARDPROXY_")}
        process = subprocess.Popen(
            command,
            env=env,
            cwd=self.terraform.work,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.running.append(process)
        return process

    def control(self) -> ControlClient:
        return ControlClient.as_approver(url=None, token=self.tokens[0], data_dir=self.data_dir)

    def wait_for_hold(self, process: subprocess.Popen[str], operation: str) -> dict[str, Any]:
        """The pending hold of ``operation``, while ``process`` waits for it."""
        deadline = time.monotonic() + TF_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                out, err = process.communicate()
                raise AssertionError(f"ended before a hold of {operation}:\n{out}\n{err}")
            try:
                pending = self.control().holds("pending")
            except Exception:  # the embedded guard (and its store) is still starting
                pending = []
            for hold in pending:
                if operation in hold["summary"]:
                    return hold
            time.sleep(0.3)
        raise AssertionError(f"no hold of {operation} within {TF_TIMEOUT} s")

    def approve(self, hold: dict[str, Any]) -> None:
        """Approve as alice, then as bob when the policy wants two people."""
        for token in self.tokens:
            approved = run_client(
                [*guardproxy_cli(), "approve", hold["id"], "--reason", "planned replace",
                 "--token", token, "--data-dir", str(self.data_dir), "--json"],
                self._cli_env(),
            )  # fmt: skip
            assert approved.returncode == 0, describe(approved)
            if json.loads(approved.stdout)["hold"]["state"] != "pending":
                return
        raise AssertionError(f"two approvals did not release {hold['id']}")

    def finish(self, process: subprocess.Popen[str]) -> tuple[int, str, str]:
        out, err = process.communicate(timeout=TF_TIMEOUT)
        return process.returncode, out, err

    def stop(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture
def guarded_terraform(
    terraform: Terraform, moto_server: MotoServer, tmp_path: Path
) -> Iterator[GuardedTerraform]:
    name = loopback_name()
    if name is None:
        pytest.skip(
            "no host name other than localhost resolves to a loopback address here "
            "(Go proxies only such names; add one to /etc/hosts)"
        )
    (terraform.work / "main.tf").write_text(configuration(f"http://{name}:{moto_server.port}"))
    init = terraform("init")
    assert init.returncode == 0, describe(init)
    runner = GuardedTerraform(terraform, tmp_path / "guard-data")
    yield runner
    runner.stop()


def _finish_ok(runner: GuardedTerraform, process: subprocess.Popen[str], done: str) -> None:
    code, out, err = runner.finish(process)
    assert code == 0 and done in out, f"exit {code}\n{out}\n{err}"


def _methods(moto: MotoServer, since: int = 0) -> list[str]:
    return [r.method for r in moto.requests[since:] if r.path.startswith(f"/{BUCKET}")]


@pytest.mark.timeout(600)
def test_guardproxy_run_holds_terraform_replace_before_the_delete_then_the_recreate(
    guarded_terraform: GuardedTerraform, moto_server: MotoServer
) -> None:
    runner = guarded_terraform
    created = runner.start("apply", "-auto-approve")
    _finish_ok(runner, created, "Apply complete! Resources: 1 added")
    first = bucket_created_at(moto_server)
    assert first is not None and "PUT" in _methods(moto_server)

    replace = runner.start("apply", f"-replace={ADDRESS}", "-auto-approve")
    held = runner.wait_for_hold(replace, "DeleteBucket")
    assert BUCKET in held["message"] and "environment prod" in held["message"]
    assert deletes_at(moto_server) == [], "the delete must not reach moto before approval"
    assert bucket_created_at(moto_server) == first
    runner.approve(held)

    recreate = runner.wait_for_hold(replace, "CreateBucket")
    assert "re-creates" in recreate["message"] and "DeleteBucket prod-assets" in recreate["message"]
    assert "in this session" in recreate["message"]
    assert len(deletes_at(moto_server)) == 1 and bucket_created_at(moto_server) is None
    runner.approve(recreate)
    _finish_ok(runner, replace, "Apply complete! Resources: 1 added, 0 changed, 1 destroyed.")
    second = bucket_created_at(moto_server)
    assert second is not None and second >= first


@pytest.mark.timeout(600)
def test_guardproxy_run_destroy_then_apply_holds_the_destroy_and_the_recreate(
    guarded_terraform: GuardedTerraform, moto_server: MotoServer
) -> None:
    runner = guarded_terraform
    _finish_ok(runner, runner.start("apply", "-auto-approve"), "Apply complete!")

    destroy = runner.start("destroy", "-auto-approve")
    held = runner.wait_for_hold(destroy, "DeleteBucket")
    assert deletes_at(moto_server) == [] and bucket_created_at(moto_server) is not None
    runner.approve(held)
    _finish_ok(runner, destroy, "Destroy complete! Resources: 1 destroyed.")
    assert bucket_created_at(moto_server) is None
    after_destroy = len(moto_server.requests)

    apply = runner.start("apply", "-auto-approve")  # a new session: history is shared
    recreate = runner.wait_for_hold(apply, "CreateBucket")
    assert "re-creates" in recreate["message"] and "in session " in recreate["message"]
    assert "PUT" not in _methods(moto_server, after_destroy), "held before it reached moto"
    runner.approve(recreate)
    _finish_ok(runner, apply, "Apply complete! Resources: 1 added")
    assert bucket_created_at(moto_server) is not None
