"""The shipped policy bundle is package data: found without a checkout, in the wheel,
used by `run` and `serve` when no bundle is named, and copied by `policy init`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from guardproxy.cli.bundles import default_policies, describe_policies
from guardproxy.cli.main import build_parser, main
from guardproxy.cli.serve import build_config
from guardproxy.policy import load_bundle
from guardproxy.policy.loader import looks_like_bundle, shipped_bundle

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
GUARDPROXY = [sys.executable, "-m", "guardproxy"]


def bundle_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.glob("*.yaml"))}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDPROXY_")}
    env.pop("KUBECONFIG", None)
    return {**env, **extra}


def test_the_shipped_bundle_is_found_through_the_package() -> None:
    shipped = shipped_bundle()
    assert shipped.parent == Path(sys.modules["guardproxy"].__file__ or "").parent
    assert bundle_files(shipped) == bundle_files(POLICIES)
    result = load_bundle([shipped])
    assert result.bundle is not None and not result.errors


def test_the_wheel_carries_the_bundle(tmp_path: Path) -> None:
    """Built from a copy of the sources (a build writes into its source tree), without
    network or build isolation: the setuptools of this virtualenv."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(POLICIES, source / "policies")
    shutil.copytree(
        ROOT / "guardproxy",
        source / "guardproxy",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("guardproxy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = {
            Path(name).name: archive.read(name)
            for name in archive.namelist()
            if name.startswith("guardproxy/policies/")
        }
    assert packaged == bundle_files(POLICIES)  # every file, as files (not a link)


# -- which bundle a command uses


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUARDPROXY_POLICIES", raising=False)
    assert default_policies() == shipped_bundle()
    local = tmp_path / "policies"
    shutil.copytree(POLICIES, local)
    assert default_policies() == Path("policies")
    monkeypatch.setenv("GUARDPROXY_POLICIES", "/from/env")
    assert default_policies() == Path("/from/env")
    args = build_parser(["serve"]).parse_args(
        ["serve", "--data-dir", str(tmp_path / "d"), "--policies", "/from/flag"]
    )
    assert build_config(args).policies == Path("/from/flag")


def test_a_policies_directory_of_something_else_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GUARDPROXY_POLICIES", raising=False)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "iam.yaml").write_text("Version: '2012-10-17'\nStatement: []\n")
    assert not looks_like_bundle(Path("policies"))
    assert default_policies() == shipped_bundle()
    assert "./policies holds no guardproxy policies; using the shipped bundle" in (
        capsys.readouterr().err
    )
    # a broken guardproxy bundle is still used (and its errors reported), never replaced
    (tmp_path / "policies" / "bundle.yaml").write_text("apiVersion: guardproxy.dev/v1\nkind: [\n")
    assert default_policies() == Path("policies")


def test_banners_say_when_the_shipped_bundle_is_in_use() -> None:
    assert "(the shipped bundle;" in describe_policies(shipped_bundle())
    assert describe_policies(Path("/srv/team-policies")) == "/srv/team-policies"


@pytest.mark.slow
def test_run_works_outside_the_repository(tmp_path: Path) -> None:
    """The reported failure: `guardproxy run` from any other directory."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run(
        [*GUARDPROXY, "run", "--data-dir", str(tmp_path / "data"), "--", "sh", "-c", "exit 3"],
        cwd=work, env=clean_env(HOME=str(tmp_path)), capture_output=True, text=True,
        timeout=90, check=False,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "cannot read" not in done.stderr
    assert '"shipped_bundle": true' in done.stderr  # the started log line says which bundle
    assert str(shipped_bundle()) in done.stderr


# -- policy init


def test_policy_init_copies_the_shipped_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "team-policies"
    assert main(["policy", "init", str(target)]) == 0
    assert "copied the shipped bundle" in capsys.readouterr().out
    assert bundle_files(target) == bundle_files(POLICIES)
    assert all(os.access(p, os.W_OK) for p in target.iterdir())
    assert main(["policy", "lint", str(target)]) == 0
    capsys.readouterr()

    assert main(["policy", "init", str(target)]) == 2
    refused = capsys.readouterr().err
    assert "is not empty" in refused and "--force" in refused
    (target / "k8s.yaml").write_text("edited")
    (target / "ours.yaml").write_text("kept")
    assert main(["policy", "init", "--force", str(target)]) == 0
    assert (target / "k8s.yaml").read_bytes() == (POLICIES / "k8s.yaml").read_bytes()
    assert (target / "ours.yaml").read_text() == "kept"


def test_policy_init_refuses_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["policy", "init", str(target)]) == 2
    assert "is not a directory" in capsys.readouterr().err
