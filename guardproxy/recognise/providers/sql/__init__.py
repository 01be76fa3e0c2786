"""SQL over HTTP: the provider module (see ``recognise/registry.py``).

Claims: a known SQL-over-HTTP carrier (Neon, Supabase and PostgREST, BigQuery queries
and query jobs, the Snowflake SQL API, Databricks statement execution), before Google
Cloud: BigQuery's query endpoints carry SQL statements *and* are Google Cloud API calls,
two layers of one request, so the Google Cloud reading is a further operation, not an
ambiguity. The recogniser (``recogniser.py``) reads each statement with the product's
own parser.

Refusals are guardproxy's own JSON (the carriers have no common error format).
Selectors: ``gcp:project:<id>`` (BigQuery's project); no name heuristic.
"""

from __future__ import annotations

from guardproxy.action import Action, Provider
from guardproxy.recognise.providers.sql import catalogue
from guardproxy.recognise.providers.sql.recogniser import looks_like_sql, recognise_sql
from guardproxy.recognise.registry import Claim, ProviderModule, Selectors, Spelling
from guardproxy.recognise.request import HttpRequest, RecogniseSettings

__all__ = ["PROVIDER"]


def _claims(request: HttpRequest, settings: RecogniseSettings) -> bool:
    return looks_like_sql(request)


def _reason(request: HttpRequest) -> str:
    return "it carries SQL to a known SQL-over-HTTP endpoint"


def _selectors(action: Action, spell: Spelling) -> list[str]:
    return [f"gcp:project:{action.scope.project}"] if action.scope.project else []


PROVIDER = ProviderModule(
    provider=Provider.SQL,
    recognise=recognise_sql,
    claims=(Claim(40, "sql", _claims, _reason),),
    layers_over=frozenset({Provider.GCP}),
    selectors=Selectors(_selectors),
    destructive=catalogue.destructive,
)
