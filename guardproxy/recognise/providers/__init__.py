"""The registered providers: one module each (see ``recognise/registry.py``).

Adding a provider: its module (claims, recogniser, error body, selectors, containers,
response names, destructive examples), its name in ``guardproxy.action.Provider``,
one line here, its tests and its policies. Registration order is the order reports
list providers in; dispatch orders claims by their priorities, not by this list.
"""

from __future__ import annotations

from guardproxy.recognise.providers import aws, azure, docker, gcp, git, github, k8s, sql, tfc
from guardproxy.recognise.registry import Registry

__all__ = ["PROVIDERS"]

PROVIDERS = Registry(
    (
        aws.PROVIDER,
        k8s.PROVIDER,
        github.PROVIDER,
        gcp.PROVIDER,
        azure.PROVIDER,
        tfc.PROVIDER,
        docker.PROVIDER,
        sql.PROVIDER,
        git.PROVIDER,
    )
)
