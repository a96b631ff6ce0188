"""Recipient resolution over an immutable directory snapshot: users, aliases, catch-alls, loops."""

from __future__ import annotations

import dataclasses
from itertools import count
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whymail.directory.snapshot import MAX_ALIAS_DEPTH, DirectorySnapshot, LocalUser, Resolution

_ids = count(1)


def user_row(email: str, *, active: bool = True, quota: int = 0, used: int = 0) -> dict[str, Any]:
    local, _, domain = email.partition("@")
    return {
        "id": next(_ids),
        "email": email,
        "domain": domain,
        "local_part": local,
        "quota_bytes": quota,
        "storage_used": used,
        "is_active": active,
    }


def snapshot(
    domains: list[str] | dict[str, bool],
    users: list[dict[str, Any]] = (),  # type: ignore[assignment]
    aliases: dict[str, list[str]] | None = None,
    inactive_aliases: dict[str, list[str]] | None = None,
) -> DirectorySnapshot:
    active = domains if isinstance(domains, dict) else dict.fromkeys(domains, True)
    alias_rows = [{"source": s, "destinations": d, "is_active": True} for s, d in (aliases or {}).items()]
    alias_rows += [
        {"source": s, "destinations": d, "is_active": False} for s, d in (inactive_aliases or {}).items()
    ]
    return DirectorySnapshot.from_rows(
        [{"name": name, "is_active": flag} for name, flag in active.items()], users, alias_rows
    )


def emails(resolution: Resolution) -> list[str]:
    return [user.email for user in resolution.users]


# --- users -------------------------------------------------------------------------------------


def test_user_resolves_to_itself_with_its_account_data() -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com", quota=1000, used=10)])
    result = snap.resolve("alice@example.com")
    assert result.kind == "local"
    assert result.remote_addresses == ()
    [alice] = result.users
    assert isinstance(alice, LocalUser)
    assert (alice.email, alice.domain, alice.local_part) == ("alice@example.com", "example.com", "alice")
    assert (alice.quota_bytes, alice.storage_used, alice.is_active) == (1000, 10, True)


@pytest.mark.parametrize(
    "written", ["ALICE@EXAMPLE.COM", "Alice@Example.Com", "  alice@example.com ", "alice@example.com."]
)
def test_lookup_ignores_case_surrounding_space_and_trailing_dot(written: str) -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com")])
    assert emails(snap.resolve(written)) == ["alice@example.com"]


def test_unknown_local_part_of_a_local_domain_is_unknown_user() -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com")])
    assert snap.resolve("bob@example.com") == Resolution("unknown_user")


def test_disabled_user_is_flagged_not_delivered() -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com", active=False)])
    result = snap.resolve("alice@example.com")
    assert result.kind == "disabled"
    assert [(u.email, u.is_active) for u in result.users] == [("alice@example.com", False)]


def test_non_local_domain_is_remote_with_the_local_part_kept_as_written() -> None:
    snap = snapshot(["example.com"])
    assert snap.resolve("Bob@Elsewhere.ORG") == Resolution("remote", remote_addresses=("Bob@elsewhere.org",))


def test_inactive_domain_is_not_local() -> None:
    snap = snapshot({"example.com": False}, [user_row("alice@example.com")])
    assert snap.resolve("alice@example.com").kind == "remote"
    assert not snap.is_local_domain("example.com")


def test_internationalised_domain_matches_in_either_form() -> None:
    snap = snapshot(["xn--bcher-kva.example"], [user_row("anna@xn--bcher-kva.example")])
    assert emails(snap.resolve("anna@BÜCHER.example")) == ["anna@xn--bcher-kva.example"]
    assert emails(snap.resolve("anna@xn--bcher-kva.example")) == ["anna@xn--bcher-kva.example"]
    assert snap.is_local_domain("bücher.example")


def test_non_ascii_local_part_is_lower_cased_and_nfc() -> None:
    snap = snapshot(["example.com"], [user_row("jösé@example.com")])
    assert emails(snap.resolve("JÖSÉ@example.com")) == ["jösé@example.com"]
    assert emails(snap.resolve("jo\u0308se\u0301@example.com")) == ["jösé@example.com"]  # decomposed form


# --- aliases -----------------------------------------------------------------------------------


def test_alias_expands_to_its_users() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com")],
        {"team@example.com": ["alice@example.com", "bob@example.com"]},
    )
    result = snap.resolve("TEAM@example.com")
    assert result.kind == "local"
    assert emails(result) == ["alice@example.com", "bob@example.com"]


def test_alias_with_local_and_remote_destinations() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com")],
        {"info@example.com": ["alice@example.com", "ext@gmail.com", "other@partner.net"]},
    )
    result = snap.resolve("info@example.com")
    assert result.kind == "local"
    assert emails(result) == ["alice@example.com"]
    assert result.remote_addresses == ("ext@gmail.com", "other@partner.net")


def test_alias_to_remote_only_is_accepted_for_forwarding() -> None:
    snap = snapshot(["example.com"], aliases={"fwd@example.com": ["me@gmail.com"]})
    assert snap.resolve("fwd@example.com") == Resolution("local", (), ("me@gmail.com",))


def test_nested_aliases_expand_and_duplicates_collapse() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com"), user_row("carol@example.com")],
        {
            "all@example.com": ["dev@example.com", "ops@example.com", "alice@example.com"],
            "dev@example.com": ["alice@example.com", "bob@example.com"],
            "ops@example.com": ["bob@example.com", "carol@example.com", "ext@gmail.com"],
        },
    )
    result = snap.resolve("all@example.com")
    assert emails(result) == ["alice@example.com", "bob@example.com", "carol@example.com"]
    assert result.remote_addresses == ("ext@gmail.com",)


def test_alias_loop_terminates_and_keeps_the_users_on_the_way() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com")],
        {
            "a@example.com": ["b@example.com"],
            "b@example.com": ["c@example.com", "alice@example.com"],
            "c@example.com": ["a@example.com"],
        },
    )
    assert emails(snap.resolve("a@example.com")) == ["alice@example.com"]


def test_alias_loop_without_users_is_unknown() -> None:
    snap = snapshot(
        ["example.com"], aliases={"a@example.com": ["b@example.com"], "b@example.com": ["a@example.com"]}
    )
    assert snap.resolve("a@example.com").kind == "unknown_user"


def test_alias_to_itself_is_harmless() -> None:
    snap = snapshot(["example.com"], aliases={"self@example.com": ["self@example.com"]})
    assert snap.resolve("self@example.com").kind == "unknown_user"


def _chain(expansions: int) -> DirectorySnapshot:
    """a0 -> a1 -> ... -> a<expansions-1> -> alice: alice is reached after `expansions` alias steps."""
    aliases = {f"a{i}@example.com": [f"a{i + 1}@example.com"] for i in range(expansions - 1)}
    aliases[f"a{expansions - 1}@example.com"] = ["alice@example.com"]
    return snapshot(["example.com"], [user_row("alice@example.com")], aliases)


def test_alias_chain_up_to_max_depth_is_followed() -> None:
    assert emails(_chain(MAX_ALIAS_DEPTH).resolve("a0@example.com")) == ["alice@example.com"]


def test_alias_chain_deeper_than_max_depth_is_cut() -> None:
    assert _chain(MAX_ALIAS_DEPTH + 1).resolve("a0@example.com").kind == "unknown_user"


def test_alias_skips_disabled_members() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com", active=False)],
        {"team@example.com": ["alice@example.com", "bob@example.com"]},
    )
    result = snap.resolve("team@example.com")
    assert result.kind == "local"
    assert emails(result) == ["alice@example.com"]


def test_alias_whose_members_are_all_disabled_is_disabled() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("bob@example.com", active=False)],
        {"team@example.com": ["bob@example.com", "ghost@example.com"]},
    )
    result = snap.resolve("team@example.com")
    assert result.kind == "disabled"
    assert emails(result) == ["bob@example.com"]


def test_dangling_destinations_are_dropped() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com")],
        {"team@example.com": ["gone@example.com", "alice@example.com", "not an address"]},
    )
    assert emails(snap.resolve("team@example.com")) == ["alice@example.com"]


def test_inactive_alias_is_ignored() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com")],
        inactive_aliases={"old@example.com": ["alice@example.com"]},
    )
    assert snap.resolve("old@example.com").kind == "unknown_user"


def test_user_wins_over_an_alias_with_the_same_address() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com")],
        {"alice@example.com": ["elsewhere@gmail.com"]},
    )
    assert snap.resolve("alice@example.com") == Resolution("local", snap.resolve("alice@example.com").users)
    assert emails(snap.resolve("alice@example.com")) == ["alice@example.com"]


def test_alias_destination_in_another_local_domain() -> None:
    snap = snapshot(
        ["example.com", "example.org"],
        [user_row("alice@example.org")],
        {"alice@example.com": ["alice@example.org"]},
    )
    assert emails(snap.resolve("alice@example.com")) == ["alice@example.org"]


# --- catch-all ---------------------------------------------------------------------------------


def test_catch_all_takes_unknown_local_parts() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com")],
        {"@example.com": ["bob@example.com"]},
    )
    assert emails(snap.resolve("anything@example.com")) == ["bob@example.com"]
    assert emails(snap.resolve("alice@example.com")) == ["alice@example.com"]  # users come first


def test_catch_all_does_not_override_an_alias() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com")],
        {"@example.com": ["bob@example.com"], "sales@example.com": ["alice@example.com"]},
    )
    assert emails(snap.resolve("sales@example.com")) == ["alice@example.com"]


def test_catch_all_with_several_destinations_and_a_remote_one() -> None:
    snap = snapshot(
        ["example.com"],
        [user_row("alice@example.com"), user_row("bob@example.com")],
        {"@example.com": ["alice@example.com", "bob@example.com", "archive@backup.net"]},
    )
    result = snap.resolve("random@example.com")
    assert emails(result) == ["alice@example.com", "bob@example.com"]
    assert result.remote_addresses == ("archive@backup.net",)


def test_catch_all_is_per_domain() -> None:
    snap = snapshot(
        ["example.com", "example.org"],
        [user_row("alice@example.com")],
        {"@example.com": ["alice@example.com"]},
    )
    assert snap.resolve("x@example.org").kind == "unknown_user"


def test_catch_all_pointing_into_its_own_domain_does_not_loop() -> None:
    snap = snapshot(["example.com"], aliases={"@example.com": ["nobody@example.com"]})
    assert snap.resolve("x@example.com").kind == "unknown_user"


def test_catch_all_applies_to_alias_destinations_in_its_domain() -> None:
    snap = snapshot(
        ["example.com", "example.org"],
        [user_row("postmaster@example.org")],
        {"x@example.com": ["whoever@example.org"], "@example.org": ["postmaster@example.org"]},
    )
    assert emails(snap.resolve("x@example.com")) == ["postmaster@example.org"]


def test_catch_all_to_a_disabled_user_is_disabled() -> None:
    snap = snapshot(
        ["example.com"], [user_row("bob@example.com", active=False)], {"@example.com": ["bob@example.com"]}
    )
    assert snap.resolve("x@example.com").kind == "disabled"


# --- odd input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "",
        "   ",
        "alice",
        "@example.com",
        "alice@",
        "a..b@example.com",
        ".a@example.com",
        "a b@example.com",
        "alice@exa mple.com",
        "alice@[192.0.2.1]",
        '"quoted"@example.com',
        "x@-bad-.com",
        "a\x00@example.com",
    ],
)
def test_invalid_addresses_are_unknown_users(address: str) -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com")], {"@example.com": ["alice@example.com"]})
    assert snap.resolve(address) == Resolution("unknown_user")


def test_user_lookup_without_expansion() -> None:
    snap = snapshot(
        ["example.com"], [user_row("alice@example.com")], {"team@example.com": ["alice@example.com"]}
    )
    assert snap.user("ALICE@example.com").email == "alice@example.com"  # type: ignore[union-attr]
    assert snap.user("team@example.com") is None
    assert snap.user("garbage") is None


def test_snapshot_is_immutable() -> None:
    snap = snapshot(["example.com"], [user_row("alice@example.com")])
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.domains = frozenset()  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.users["x@example.com"] = snap.users["alice@example.com"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.resolve("alice@example.com").kind = "remote"  # type: ignore[misc]


def test_empty_snapshot_treats_everything_as_remote() -> None:
    assert DirectorySnapshot().resolve("a@example.com").kind == "remote"


_SNAP = snapshot(
    ["example.com", "xn--bcher-kva.example"],
    [user_row("alice@example.com"), user_row("bob@example.com", active=False)],
    {
        "team@example.com": ["alice@example.com", "bob@example.com", "ext@gmail.com"],
        "loop@example.com": ["loop2@example.com"],
        "loop2@example.com": ["loop@example.com"],
        "@xn--bcher-kva.example": ["alice@example.com"],
    },
)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=120))
def test_resolve_never_raises_on_any_string(text: str) -> None:
    result = _SNAP.resolve(text)
    assert result.kind in ("local", "unknown_user", "disabled", "remote")
    assert isinstance(_SNAP.is_local_domain(text), bool)
    _SNAP.user(text)


@settings(max_examples=400, deadline=None)
@given(
    local=st.text(max_size=70),
    domain=st.sampled_from(
        ["example.com", "EXAMPLE.com", "bücher.example", "elsewhere.org", "", "a..b", "xn--"]
    ),
)
def test_resolve_never_raises_on_addresses(local: str, domain: str) -> None:
    result = _SNAP.resolve(f"{local}@{domain}")
    if result.kind == "local":
        assert result.users or result.remote_addresses
        assert all(user.is_active for user in result.users)


@settings(max_examples=200, deadline=None)
@given(st.emails())
def test_any_valid_remote_address_is_remote(address: str) -> None:
    result = _SNAP.resolve(address)
    domain = address.rpartition("@")[2].lower()
    if domain not in ("example.com", "xn--bcher-kva.example"):
        assert result.kind == "remote"
