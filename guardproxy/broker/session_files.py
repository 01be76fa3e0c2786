"""What a brokered session's tools are given instead of the real credentials, and what is
taken away: written by ``guardproxy run`` from the guard's offer (``Broker.offer``).

* AWS: a session config and credentials file (one profile per brokered profile, with
  your profile's region and other non-secret settings), the default pair in
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``; every variable that names a real
  credential, a profile or a credential endpoint is removed, the instance metadata
  service is switched off.
* GitHub: placeholder ``GH_TOKEN``/``GITHUB_TOKEN`` and a git credential helper for the
  brokered hosts that hands git the placeholder (configured through ``GIT_CONFIG_*``,
  after an empty ``helper`` that drops your own helpers for those hosts only).
* GCP: gcloud's ``auth/access_token_file``, an ADC file whose refresh the guard answers,
  ``GOOGLE_OAUTH_ACCESS_TOKEN`` (Terraform's google provider).
* Azure: ``AZURE_ACCESS_TOKEN``; Terraform Cloud: ``TF_TOKEN_<host>``.

``hidden`` lists the real credential files an enforced session must not see (the
sandbox mounts an empty directory or /dev/null over them); ``visible`` says, for the
banner, which real credentials the agent can still reach.
"""

from __future__ import annotations

import configparser
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardproxy.session.environment import kubeconfig_sources, merged_kubeconfig

AWS_REMOVED = (
    "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CREDENTIAL_EXPIRATION", "AWS_CREDENTIAL_FILE", "AWS_SSO_SESSION",
)  # fmt: skip
AWS_COPIED_SETTINGS = (
    "region", "output", "s3", "endpoint_url", "retry_mode", "max_attempts",
    "sts_regional_endpoints", "use_fips_endpoint", "use_dualstack_endpoint", "defaults_mode",
    "parameter_validation", "cli_pager", "cli_timestamp_format", "duration_seconds",
    "ignore_configured_endpoint_urls", "request_checksum_calculation",
    "response_checksum_validation",
)  # fmt: skip
"""A profile's settings that are not credentials and that the session keeps."""
GITHUB_VARIABLES = ("GH_TOKEN", "GITHUB_TOKEN", "GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN")
GCP_REMOVED = (
    "GOOGLE_CREDENTIALS", "GOOGLE_CLOUD_KEYFILE_JSON", "GCLOUD_KEYFILE_JSON",
    "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", "CLOUDSDK_AUTH_ACCESS_TOKEN",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)  # fmt: skip
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", *GITHUB_VARIABLES,
    "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "ARM_CLIENT_SECRET",
    "ARM_ACCESS_KEY", "AZURE_CLIENT_SECRET", "AZURE_ACCESS_TOKEN", "TFE_TOKEN",
    "ATLAS_TOKEN", "DIGITALOCEAN_TOKEN", "CLOUDFLARE_API_TOKEN", "VAULT_TOKEN",
)  # fmt: skip
"""Variables known to carry a real credential: the banner names those left to the agent."""


@dataclass
class SessionCredentials:
    """What ``run`` sets, removes and hides for a session, and what it tells the user."""

    environment: dict[str, str] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    brokered: list[str] = field(default_factory=list)
    visible: list[str] = field(default_factory=list)


def _home(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("HOME") or str(Path.home()))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)


def _existing(paths: list[Path]) -> list[Path]:
    return [p for p in paths if p.exists()]


def session_credentials(
    offer: Mapping[str, Any], environ: Mapping[str, str], session_dir: Path, *, enforced: bool
) -> SessionCredentials:
    """The session's credential variables and files (written into ``session_dir``)."""
    out = SessionCredentials()
    home = _home(environ)
    if "aws" in offer:
        _aws(offer["aws"], environ, session_dir, out, home)
    _kubernetes(offer.get("kubernetes") or {}, environ, out)
    if "github" in offer:
        _github(offer["github"], environ, out, home)
    if "gcp" in offer:
        _gcp(offer["gcp"], environ, session_dir, out, home)
    if "azure" in offer:
        out.brokered.append("azure")
        out.environment["AZURE_ACCESS_TOKEN"] = offer["azure"]["token"]
        out.hidden += [Path(environ.get("AZURE_CONFIG_DIR") or home / ".azure")]
    if "terraform" in offer:
        _terraform(offer["terraform"], environ, out, home)
    _visible(out, environ, enforced=enforced)
    return out


def _aws(offer: Mapping[str, Any], environ: Mapping[str, str], session_dir: Path,
         out: SessionCredentials, home: Path) -> None:  # fmt: skip
    profiles: dict[str, dict[str, str]] = offer["profiles"]
    real_config = Path(environ.get("AWS_CONFIG_FILE") or home / ".aws" / "config")
    real_credentials = Path(
        environ.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"
    )
    parser = configparser.RawConfigParser()
    try:
        parser.read(real_config, encoding="utf-8")
    except configparser.Error:
        parser = configparser.RawConfigParser()
    config_lines: list[str] = []
    credential_lines: list[str] = []
    for name, key in profiles.items():
        source = key.get("source_profile") or environ.get("AWS_PROFILE") or "default"
        section = "default" if source == "default" else f"profile {source}"
        header = "[default]" if name == "default" else f"[profile {name}]"
        config_lines.append(header)
        if parser.has_section(section):
            for option in AWS_COPIED_SETTINGS:
                if parser.has_option(section, option):
                    value = parser.get(section, option).replace("\n", "\n  ")
                    config_lines.append(f"{option} = {value}")
        config_lines.append("")
        credential_lines += [f"[{name}]", f"aws_access_key_id = {key['access_key_id']}",
                             f"aws_secret_access_key = {key['secret_access_key']}", ""]  # fmt: skip
    config_file, credentials_file = session_dir / "aws-config", session_dir / "aws-credentials"
    _write(config_file, "\n".join(config_lines))
    _write(credentials_file, "\n".join(credential_lines))
    env = out.environment
    env["AWS_CONFIG_FILE"] = str(config_file)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(credentials_file)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    default = profiles.get("default") or next(iter(profiles.values()))
    env["AWS_ACCESS_KEY_ID"] = default["access_key_id"]
    env["AWS_SECRET_ACCESS_KEY"] = default["secret_access_key"]
    out.removed += list(AWS_REMOVED)
    out.brokered.append(f"aws (profiles {', '.join(profiles)})")
    hidden = [home / ".aws", real_config, real_credentials]
    if environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        hidden.append(Path(environ["AWS_WEB_IDENTITY_TOKEN_FILE"]))
    out.hidden += hidden


def _kubernetes(offer: Mapping[str, Any], environ: Mapping[str, str],
                out: SessionCredentials) -> None:  # fmt: skip
    users: dict[str, str] = offer.get("users") or {}
    left: dict[str, str] = offer.get("not_brokered") or {}
    if users:
        out.brokered.append(f"kubernetes (users {', '.join(users)})")
    out.visible += [f"kubeconfig user {name!r}: {why}" for name, why in left.items()]
    sources = kubeconfig_sources(environ)
    if not sources or not users:
        return
    out.hidden += sources  # the session reads its own kubeconfig
    try:
        merged = merged_kubeconfig(sources)
    except (OSError, ValueError):
        return
    for item in merged["users"]:
        if item["name"] not in users:
            continue
        user = item.get("user") or {}
        for key in ("client-certificate", "client-key", "tokenFile"):
            if isinstance(user.get(key), str) and user[key]:
                out.hidden.append(Path(user[key]))


def _helper_config(hosts: list[str], token: str, environ: Mapping[str, str]) -> dict[str, str]:
    """GIT_CONFIG_* entries: for each host, an empty helper (drops the user's helpers for
    that host only: git resets its helper list on an empty value) and then one that
    answers with the session's placeholder."""
    helper = (
        "!f() { test \"$1\" = get && printf 'username=x-access-token\\npassword=%s\\n' "
        f"{shlex.quote(token)}; }}; f"
    )
    count = int(environ.get("GIT_CONFIG_COUNT", "0") or "0")
    env: dict[str, str] = {}
    for host in hosts:
        schemes = ["https"] if host == "github.com" else ["https", "http"]
        for scheme in schemes:
            for value in ("", helper):
                env[f"GIT_CONFIG_KEY_{count}"] = f"credential.{scheme}://{host}.helper"
                env[f"GIT_CONFIG_VALUE_{count}"] = value
                count += 1
    env["GIT_CONFIG_COUNT"] = str(count)
    return env


def _github(offer: Mapping[str, Any], environ: Mapping[str, str], out: SessionCredentials,
            home: Path) -> None:  # fmt: skip
    token: str = offer["token"]
    hosts: list[str] = offer.get("hosts") or ["github.com"]
    env = out.environment
    env["GH_TOKEN"] = env["GITHUB_TOKEN"] = token
    if any(h != "github.com" for h in hosts):
        env["GH_ENTERPRISE_TOKEN"] = env["GITHUB_ENTERPRISE_TOKEN"] = token
    else:
        out.removed += ["GH_ENTERPRISE_TOKEN", "GITHUB_ENTERPRISE_TOKEN"]
    env.update(_helper_config(hosts, token, environ))
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    out.hidden += [Path(environ.get("GH_CONFIG_DIR") or config_home / "gh"),
                   home / ".git-credentials", config_home / "git" / "credentials"]  # fmt: skip
    out.brokered.append(f"github ({', '.join(hosts)})")


def _gcp(offer: Mapping[str, Any], environ: Mapping[str, str], session_dir: Path,
         out: SessionCredentials, home: Path) -> None:  # fmt: skip
    token_file = session_dir / "gcp-access-token"
    _write(token_file, offer["token"] + "\n")
    adc = session_dir / "gcp-adc.json"
    _write(adc, json.dumps({
        "type": "authorized_user",
        "client_id": "guardproxy-session.apps.googleusercontent.com",
        "client_secret": "guardproxy-session",
        "refresh_token": offer["refresh_token"],
        **({"quota_project_id": offer["project"]} if offer.get("project") else {}),
    }, indent=2))  # fmt: skip
    env = out.environment
    env["CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"] = str(token_file)
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(adc)
    env["GOOGLE_OAUTH_ACCESS_TOKEN"] = offer["token"]
    if offer.get("project") and not environ.get("CLOUDSDK_CORE_PROJECT"):
        env["CLOUDSDK_CORE_PROJECT"] = offer["project"]
    out.removed += [v for v in GCP_REMOVED if v != "GOOGLE_OAUTH_ACCESS_TOKEN"]
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    out.hidden.append(Path(environ.get("CLOUDSDK_CONFIG") or config_home / "gcloud"))
    if environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        out.hidden.append(Path(environ["GOOGLE_APPLICATION_CREDENTIALS"]))
    out.brokered.append("gcp")


def _terraform(offer: Mapping[str, Any], environ: Mapping[str, str], out: SessionCredentials,
               home: Path) -> None:  # fmt: skip
    hosts: list[str] = offer.get("hosts") or ["app.terraform.io"]
    for host in hosts:
        if ":" in host:  # terraform names a host's token variable without a port
            continue
        name = "TF_TOKEN_" + host.replace("-", "__").replace(".", "_")
        out.environment[name] = offer["token"]
    out.removed += ["TFE_TOKEN", "ATLAS_TOKEN"]
    out.hidden.append(home / ".terraform.d" / "credentials.tfrc.json")
    out.brokered.append(f"terraform ({', '.join(hosts)})")


def _visible(out: SessionCredentials, environ: Mapping[str, str], *, enforced: bool) -> None:
    """What the agent can still reach: credential variables that stay, and (cooperative
    mode) the real credential files, which only --enforce hides."""
    kept = {k for k in environ if k not in out.removed and k not in out.environment}
    names = sorted(
        k for k in kept
        if k in CREDENTIAL_VARIABLES or (k.startswith("TF_TOKEN_") and k not in out.environment)
    )  # fmt: skip
    out.visible += [f"${name}" for name in names]
    if not enforced:
        files = sorted({str(p) for p in _existing(out.hidden)})
        out.visible += [f"{f} (readable without --enforce)" for f in files]


__all__ = ["AWS_REMOVED", "CREDENTIAL_VARIABLES", "SessionCredentials", "session_credentials"]
