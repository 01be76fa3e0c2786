"""Builds ``data/pg_functions.json``: the built-in functions PostgreSQL itself declares
free of side effects (the SQL recogniser reads a ``SELECT`` of one of them as a read).

The list is PostgreSQL's own catalog: every ``pg_catalog`` function name whose overloads
are all ``IMMUTABLE`` or ``STABLE`` (``pg_proc.provolatile`` ``i`` or ``s``; a stable
function "cannot modify the database", per the CREATE FUNCTION documentation). Volatile
built-ins are classified one by one in ``postgres.py``; a function that is in neither
(an extension's, a user's, one newer than the catalog read here) is an ``execute``.

Run against any PostgreSQL server (``python -m
guardproxy.recognise.providers.sql.postgres_catalog postgresql://...``); it writes
nothing but the JSON on stdout.
"""

from __future__ import annotations

import json
import sys

import psycopg

_QUERY = """
SELECT p.proname
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'pg_catalog'
GROUP BY p.proname
HAVING bool_and(p.provolatile IN ('i', 's'))
ORDER BY p.proname
"""


def catalog(url: str) -> dict[str, object]:
    """The side-effect-free built-in function names of the server at ``url``."""
    with psycopg.connect(url) as connection:
        version = connection.execute("SHOW server_version").fetchone()
        names = [row[0] for row in connection.execute(_QUERY).fetchall()]
    return {"postgresql": version[0] if version else "", "side_effect_free": names}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m guardproxy.recognise.providers.sql.postgres_catalog POSTGRES_URL")
        return 2
    print(json.dumps(catalog(argv[0]), indent=0))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
