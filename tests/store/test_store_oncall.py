"""What on-call routing and chat approvals keep (migration 6), on each backend: approvers'
identities elsewhere, pages claimed once and resolved once even by two processes at once,
the chat message of a hold, and chat callbacks seen before (replays)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from guardproxy.store import (
    AlreadyExistsError,
    Approver,
    ApproverLink,
    ChatMessage,
    NotFoundError,
    Store,
    hash_token,
)

from .conftest import T0, HoldFactory, OpenStore


def link(approver: str, kind: str, external_id: str) -> ApproverLink:
    return ApproverLink(approver=approver, kind=kind, external_id=external_id, created_at=T0)


def add(store: Store, *names: str) -> None:
    for name in names:
        store.add_approver(
            Approver(name=name, groups=("senior",), token_hash=hash_token(name), created_at=T0)
        )


def test_an_identity_finds_its_approver_and_replaces_the_previous_one(store: Store) -> None:
    add(store, "alice", "bob")
    store.link_approver(link("alice", "slack", "U0ALICE"))
    store.link_approver(link("alice", "pagerduty", "alice@example.com"))
    found = store.find_approver_by_link("slack", "U0ALICE")
    assert found is not None and found.name == "alice"
    assert store.find_approver_by_link("slack", "U0BOB") is None
    assert store.find_approver_by_link("pagerduty", "U0ALICE") is None  # kinds are apart
    store.link_approver(link("alice", "slack", "U0ALICE2"))  # a new workspace id
    assert store.find_approver_by_link("slack", "U0ALICE") is None
    assert [(x.approver, x.kind, x.external_id) for x in store.list_approver_links()] == [
        ("alice", "pagerduty", "alice@example.com"),
        ("alice", "slack", "U0ALICE2"),
    ]
    assert [x.kind for x in store.list_approver_links("slack")] == ["slack"]


def test_an_identity_names_one_approver(store: Store) -> None:
    add(store, "alice", "bob")
    store.link_approver(link("alice", "slack", "U0ALICE"))
    with pytest.raises(AlreadyExistsError, match="linked to alice"):
        store.link_approver(link("bob", "slack", "U0ALICE"))
    with pytest.raises(NotFoundError):
        store.link_approver(link("nobody", "slack", "U0NOBODY"))
    found = store.find_approver_by_link("slack", "U0ALICE")
    assert found is not None and found.name == "alice"


def test_unlinking_and_removing_an_approver_forget_the_identity(store: Store) -> None:
    add(store, "alice")
    store.link_approver(link("alice", "slack", "U0ALICE"))
    store.unlink_approver("alice", "slack")
    assert store.find_approver_by_link("slack", "U0ALICE") is None
    with pytest.raises(NotFoundError):
        store.unlink_approver("alice", "slack")
    store.link_approver(link("alice", "slack", "U0ALICE"))
    store.remove_approver("alice")
    add(store, "alice")  # a new person of the same name inherits nothing
    assert store.list_approver_links() == []
    assert store.find_approver_by_link("slack", "U0ALICE") is None


def test_a_page_level_is_claimed_once_and_resolved_once(
    store: Store, make_hold: HoldFactory
) -> None:
    hold = make_hold()
    group = "oncall:platform-primary"
    claim = {"schedule": "platform-primary", "pager": "pagerduty", "dedup_key": hold.id}
    first = store.claim_page(hold.id, group, 1, at=T0, **claim)
    assert first is not None and first.triggered_at is None and first.resolved_at is None
    assert store.claim_page(hold.id, group, 1, at=T0, **claim) is None
    store.update_page(hold.id, group, 1, triggered_at=T0 + timedelta(seconds=1), error="")
    second = store.claim_page(
        hold.id, group, 2, at=T0, **{**claim, "schedule": "platform-secondary"}
    )
    assert second is not None
    store.update_page(hold.id, group, 2, triggered_at=None, error="HTTP 400")
    other = store.claim_page(hold.id, "oncall:dba", 1, at=T0, **{**claim, "schedule": "dba"})
    assert other is not None
    later = T0 + timedelta(minutes=1)
    resolved = store.claim_page_resolutions(hold.id, later)
    assert [(p.level, p.schedule, p.error) for p in resolved] == [
        (1, "dba", ""),
        (1, "platform-primary", ""),
        (2, "platform-secondary", "HTTP 400"),
    ]
    assert store.claim_page_resolutions(hold.id, later) == []
    (_, one, two) = store.list_pages([hold.id, "h-other"])
    assert one.triggered_at == T0 + timedelta(seconds=1) and one.resolved_at == later
    assert two.triggered_at is None and two.resolved_at == later
    assert store.list_pages([]) == []


def test_two_processes_resolving_a_hold_send_each_resolution_once(
    store: Store, make_hold: HoldFactory, open_store_again: OpenStore
) -> None:
    hold = make_hold()
    for level in (1, 2):
        store.claim_page(
            hold.id, "oncall:s", level, schedule="s", pager="pagerduty", dedup_key=hold.id, at=T0
        )
    others = [open_store_again() for _ in range(4)]
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(len(others))

    def resolve(each: Store) -> None:
        start.wait()
        pages = each.claim_page_resolutions(hold.id, T0)
        with lock:
            claimed.extend(page.level for page in pages)

    threads = [threading.Thread(target=resolve, args=(each,)) for each in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(claimed) == [1, 2]


def test_a_hold_has_one_chat_message_per_kind(store: Store, make_hold: HoldFactory) -> None:
    hold = make_hold()
    message = ChatMessage(
        hold_id=hold.id, kind="slack", channel="C0HOLDS", message_ts="1700000000.000100",
        posted_at=T0,
    )  # fmt: skip
    assert store.get_chat_message(hold.id, "slack") is None
    assert store.save_chat_message(message)
    assert not store.save_chat_message(message)
    assert store.get_chat_message(hold.id, "slack") == message


def test_a_chat_request_is_claimed_once_and_forgotten_after_its_window(store: Store) -> None:
    window = timedelta(minutes=5)
    assert store.claim_chat_request("digest-1", T0, forget_before=T0 - window)
    assert not store.claim_chat_request("digest-1", T0 + timedelta(minutes=1),
                                        forget_before=T0 - window)  # fmt: skip
    much_later = T0 + timedelta(hours=1)
    assert store.claim_chat_request("digest-2", much_later, forget_before=much_later - window)
    # digest-1 is older than the window: dropped (a request that old fails its timestamp)
    assert store.claim_chat_request("digest-1", much_later, forget_before=much_later - window)
