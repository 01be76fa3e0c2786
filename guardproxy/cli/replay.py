"""``guardproxy replay``: what would another bundle have done to recorded traffic?

* ``replay --policies DIR``: the recorded decisions' inputs, re-evaluated.
* ``replay --flows FILE --policies DIR``: a mitmproxy flow file, decided by the proxy's own
  pipeline (``--config``: the proxy's config file, for the settings decisions depend on).
* ``replay --shadow``: recorded decisions whose shadow outcome differs from the enforced one.

What it reports as recorded comes from the audit chain, verified as it is read: a broken
chain (an edited, inserted or deleted record) makes it refuse, naming the first break,
unless ``--allow-broken-chain`` (then it warns, and marks the records at a break).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guardproxy.cli.audit import open_audit_store, store_options, time_option
from guardproxy.cli.errors import UsageError
from guardproxy.cli.style import Style


def add_commands(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="re-evaluate recorded decisions or mitmproxy flows under a bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    replay.add_argument("--policies", type=Path, metavar="DIR", help="the bundle to replay under")
    replay.add_argument("--flows", type=Path, metavar="FILE", help="a mitmproxy flow file")
    replay.add_argument(
        "--shadow", action="store_true", help="list decisions where shadow ≠ enforced"
    )
    store_options(replay)
    replay.add_argument("--since", metavar="T", help="ISO time or span back (24h, 7d)")
    replay.add_argument("--until", metavar="T")
    replay.add_argument("--session", help="only this session's decisions")
    replay.add_argument(
        "--kubernetes-host",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="with --flows: an API server to read as Kubernetes (repeatable)",
    )
    replay.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="with --flows: the proxy's config file, for its environments, Kubernetes hosts "
        "and destructive budget (flags add to it)",
    )
    replay.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SELECTOR=ENV",
        help="with --flows: the environment of what a selector names, as serve --env",
    )
    replay.add_argument(
        "--destructive-budget",
        type=int,
        metavar="N",
        help="with --flows: the proxy's destructive budget (default 10)",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.add_argument(
        "--fail-on-change", action="store_true", help="exit 1 if any decision would change"
    )
    replay.add_argument(
        "--allow-broken-chain",
        action="store_true",
        help="replay even if the audit chain does not verify (warns; default: refuse)",
    )
    replay.set_defaults(handler=cmd_replay)


def _bundle(path: Path) -> Any:
    from guardproxy.server import StartError, load_policies  # noqa: PLC0415 - heavy

    try:
        return load_policies(path)
    except StartError as error:
        raise UsageError(str(error)) from error


def _records(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """The decision records asked for, and the check of the chain they were read from."""
    since, until = time_option(args.since), time_option(args.until)
    from guardproxy.audit.replay import ChainCheck, checked_chain  # noqa: PLC0415

    check = ChainCheck()
    store = open_audit_store(args)
    try:
        records = [
            r
            for r in checked_chain(store, check)
            if r.kind == "decision"
            and (since is None or r.at >= since)
            and (until is None or r.at < until)
            and (args.session is None or r.session_id == args.session)
        ]
    finally:
        store.close()
    return records, check


class _BrokenChainError(Exception):
    """The chain did not verify and --allow-broken-chain was not given."""


def _judge_chain(args: argparse.Namespace, check: Any) -> None:
    """Refuse a broken chain (one line, the first break), or warn with the flag."""
    if check.intact:
        return
    if not args.allow_broken_chain:
        print(
            f"guardproxy: the audit trail is broken at {check.first()}; replay does not "
            "report a tampered trail as what was recorded (`guardproxy audit verify` lists "
            "every break; --allow-broken-chain replays anyway)",
            file=sys.stderr,
        )
        raise _BrokenChainError
    print(
        f"guardproxy: warning: the audit trail is broken at {check.first()}; what it says "
        "was recorded may have been altered (records at a break are marked)",
        file=sys.stderr,
    )


def cmd_replay(args: argparse.Namespace) -> int:
    try:
        return _replay(args)
    except _BrokenChainError:
        return 1


def _replay(args: argparse.Namespace) -> int:
    if args.shadow:
        return _shadow(args)
    if args.policies is None:
        raise UsageError("replay needs --policies DIR (the bundle to replay under), or --shadow")
    if args.flows is not None:
        return _flows(args)
    from guardproxy.audit.replay import replay_records  # noqa: PLC0415

    bundle = _bundle(args.policies)
    records, check = _records(args)
    _judge_chain(args, check)
    report = replay_records(records, bundle, broken=check.broken_records)
    if args.json:
        print(
            json.dumps(
                {"bundle": bundle.digest, "chain": check.as_dict(), **report.as_dict()}, indent=2
            )
        )
    else:
        style = Style()
        changes = report.changes
        print(
            f"replayed {len(report.results)} decisions under {args.policies} "
            f"({bundle.digest[:19]}): {len(changes)} would change, "
            f"{sum(r.exact for r in report.results)} identical"
        )
        for transition, count in report.transitions().items():
            print(f"  {transition:<14} {count}")
        if changes:
            print()
            print(f"{'ID':<16} {'WHEN':<19} {'CHANGE':<14} {'ACTION':<48} RULES NOW")
            for r in changes:
                change = f"{style.outcome(r.recorded)}→{style.outcome(r.replayed)}"
                when = r.at.strftime("%Y-%m-%d %H:%M:%S")
                rules = ", ".join(r.replayed_rules) or "-"
                mark = "" if r.chain_intact else "  [chain broken here]"
                print(
                    f"{r.record_id:<16} {when:<19} {change:<14} {r.summary[:48]:<48} {rules}{mark}"
                )
        if report.unreadable:
            print(f"note: {len(report.unreadable)} records could not be read and were skipped")
        altered = sum(not r.input_intact for r in report.results)
        if altered:
            print(
                f"note: {altered} recorded inputs were altered by redaction; their replay "
                "may differ for that reason alone"
            )
    return 1 if args.fail_on_change and report.changes else 0


def _proxy_settings(args: argparse.Namespace) -> tuple[Any, Any]:
    """The recogniser and history settings the proxy ran with: its config file's
    environments, Kubernetes hosts and destructive budget, and the flags'."""
    import pydantic  # noqa: PLC0415

    from guardproxy.cli.serve import ConfigError, read_config_file, setting_problem  # noqa: PLC0415
    from guardproxy.config import ProxyConfig  # noqa: PLC0415
    from guardproxy.recognise import RecogniseSettings  # noqa: PLC0415
    from guardproxy.session.history import HistorySettings  # noqa: PLC0415

    try:
        values = read_config_file(args.config) if args.config is not None else {}
    except ConfigError as error:
        raise UsageError(str(error)) from None
    environments = dict(values.get("environments") or {})
    for item in args.env:
        selector, sep, environment = item.rpartition("=")
        if not sep:
            raise UsageError(f"--env {item!r}: write SELECTOR=ENV")
        environments[selector] = environment
    picked = {
        "data_dir": Path("."),  # required by the model, not used here
        "environments": environments,
        "kubernetes_hosts": values.get("kubernetes_hosts"),
        "destructive_budget": values.get("destructive_budget")
        if args.destructive_budget is None
        else args.destructive_budget,
    }
    try:
        config = ProxyConfig.model_validate(
            {key: value for key, value in picked.items() if value is not None}
        )
    except pydantic.ValidationError as error:
        raise UsageError(setting_problem(error, args.config)) from None
    settings = RecogniseSettings(
        environments=dict(config.environments),
        kubernetes_hosts=(*config.kubernetes_hosts, *args.kubernetes_host),
    )
    return settings, HistorySettings(destructive_budget=config.destructive_budget)


def _flows(args: argparse.Namespace) -> int:
    from guardproxy.intercept.replay import replay_flows  # noqa: PLC0415 - loads mitmproxy

    if not args.flows.is_file():
        raise UsageError(f"no flow file {args.flows}")
    bundle = _bundle(args.policies)
    settings, history = _proxy_settings(args)
    recorded = open_audit_store(args) if (args.data_dir or args.store) else None
    try:
        report = replay_flows(
            args.flows, bundle, settings, history_settings=history, recorded=recorded
        )
    except Exception as error:  # mitmproxy raises its own types for a corrupt file
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"cannot read flows from {args.flows}: {error}") from error
    finally:
        if recorded is not None:
            recorded.close()
    _judge_chain(args, report.chain)
    if args.json:
        print(
            json.dumps(
                {"bundle": bundle.digest, "chain": report.chain.as_dict(), **report.as_dict()},
                indent=2,
            )
        )
    else:
        style = Style()
        print(f"{len(report.decisions)} requests from {args.flows} under {args.policies}:")
        for outcome, count in report.distribution().items():
            print(f"  {style.outcome(outcome):<6} {count}")
        for d in report.decisions:
            if d.outcome != "allow":
                rules = ", ".join(d.rules)
                print(f"  #{d.index:<4} {style.outcome(d.outcome):<6} {d.summary}  [{rules}]")
        compared = report.compared
        if compared:
            exact = sum(bool(d.exact) for d in compared)
            print(f"{exact} of {len(compared)} decisions guardproxy recorded reproduced exactly")
        differences = report.differences
        if differences:
            print(f"{len(differences)} differ from what guardproxy recorded:")
            for d in differences:
                print(f"  #{d.index:<4} recorded {d.recorded} → now {d.outcome}  {d.summary}")
    return 1 if args.fail_on_change and report.differences else 0


def _shadow(args: argparse.Namespace) -> int:
    from guardproxy.audit.replay import shadow_differences  # noqa: PLC0415

    records, check = _records(args)
    _judge_chain(args, check)
    shadowed, differences = shadow_differences(records)
    if args.json:
        print(
            json.dumps(
                {
                    "shadowed": shadowed,
                    "differ": len(differences),
                    "differences": [d.as_dict() for d in differences],
                },
                indent=2,
            )
        )
        return 0
    print(f"{shadowed} decisions carry a shadow outcome; {len(differences)} differ:")
    style = Style()
    for d in differences:
        when = d.at.strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"  {d.record_id:<16} {when}  enforced {style.outcome(d.enforced)}, "
            f"shadow {style.outcome(d.shadow)} ({d.source}: {', '.join(d.shadow_rules)})  "
            f"{d.summary}"
        )
    return 0
