"""What an identity provider's claims say about a person: login, name, e-mail, grants.

Pure: the claims of a checked ID token (and the provider's userinfo) in, a `Claimed`
out, by the settings `accounts.oidc` (login_claim, roles_claim, role_map, agency_claim,
region_claim). A claim that cannot be used is a `ClaimsError` naming the claim and the
setting, so an operator can tell a provider's mistake from the hub's configuration.

`role_map` maps a value of `roles_claim` (e.g. a group) to a role, optionally with the
kind of scope: `"library_staff"`, `"finance@agency"`, `"finance@consortium"`. The scope
itself comes from the claims: an agency role's from `agency_claim` (one symbol or a
list), a regional role's from `region_claim`. A role that may be held over several
kinds of scope (finance, auditor) without a kind written takes the narrowest the
claims name, and never the whole consortium by default: the centre's grants are
written out (`@consortium`), so a missing agency claim cannot widen anyone's reach.
Values of `roles_claim` that `role_map` does not name are ignored (a directory's
groups are mostly about other things).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from accounts.people import AccountError, normal_login
from accounts.roles import ROLE_SCOPES, Grant, GrantError, Role, ScopeKind
from schemas.settings import Oidc

# The narrowest first: what an unqualified multi-scope role takes from the claims.
NARROW_FIRST = (ScopeKind.AGENCY, ScopeKind.REGION)


class ClaimsError(ValueError):
    """The claims (or `accounts.oidc`) do not say who this is or what they may do."""


@dataclass(frozen=True)
class Claimed:
    login: str
    display_name: str
    email: str | None
    grants: frozenset[Grant]


def claimed(claims: Mapping[str, Any], oidc: Oidc) -> Claimed:
    """The person the claims describe, with the grants `role_map` gives them."""
    login = _login(claims, oidc.login_claim)
    name = claims.get("name")
    email = claims.get("email")
    return Claimed(
        login=login,
        display_name=name.strip() if isinstance(name, str) and name.strip() else login,
        email=email.strip() if isinstance(email, str) and email.strip() else None,
        grants=grants(claims, oidc))


def _login(claims: Mapping[str, Any], claim: str) -> str:
    value = claims.get(claim)
    if not isinstance(value, str) or not value.strip():
        raise ClaimsError(f"the ID token has no {claim!r} claim to name the account "
                          "(setting accounts.oidc.login_claim)")
    try:
        return normal_login(value)
    except AccountError as exc:
        raise ClaimsError(f"claim {claim!r}: {exc}") from None


def grants(claims: Mapping[str, Any], oidc: Oidc) -> frozenset[Grant]:
    """The grants of every value of `roles_claim` that `role_map` names."""
    found: set[Grant] = set()
    for value in _strings(claims.get(oidc.roles_claim), oidc.roles_claim):
        target = oidc.role_map.get(value)
        if target is not None:
            role, kind = parse_target(value, target)
            found.update(_scoped(role, kind, claims, oidc))
    return frozenset(found)


def parse_target(value: str, target: str) -> tuple[Role, ScopeKind | None]:
    """`role` or `role@kind` of role_map[value]; a bad entry is the settings' fault."""
    name, _, kind = target.partition("@")
    try:
        role = Role(name.strip())
    except ValueError:
        raise ClaimsError(f"accounts.oidc.role_map[{value!r}] = {target!r}: unknown role; "
                          f"one of {', '.join(r.value for r in Role)}") from None
    if not kind:
        return role, None
    try:
        scope_kind = ScopeKind(kind.strip())
    except ValueError:
        raise ClaimsError(f"accounts.oidc.role_map[{value!r}] = {target!r}: scope kind "
                          "is consortium, region or agency") from None
    if scope_kind not in ROLE_SCOPES[role]:
        raise ClaimsError(f"accounts.oidc.role_map[{value!r}] = {target!r}: {role} can be "
                          f"granted over {', '.join(sorted(ROLE_SCOPES[role]))}")
    return role, scope_kind


def _scoped(role: Role, kind: ScopeKind | None, claims: Mapping[str, Any],
            oidc: Oidc) -> list[Grant]:
    allowed = ROLE_SCOPES[role]
    if kind is None:
        if allowed == {ScopeKind.CONSORTIUM}:
            kind = ScopeKind.CONSORTIUM
        else:
            kind = next((k for k in NARROW_FIRST
                         if k in allowed and claims.get(_claim_of(k, oidc)) not in (None, "",
                                                                                   [])),
                        None)
        if kind is None:
            wanted = " or ".join(repr(_claim_of(k, oidc)) for k in NARROW_FIRST if k in allowed)
            hint = (f" (for the whole consortium write '{role}@consortium' in "
                    "accounts.oidc.role_map)") if ScopeKind.CONSORTIUM in allowed else ""
            raise ClaimsError(f"role {role} needs the claim {wanted} to say where it holds; "
                              f"the ID token has none{hint}")
    if kind is ScopeKind.CONSORTIUM:
        return [Grant(role, kind)]
    claim = _claim_of(kind, oidc)
    scopes = _strings(claims.get(claim), claim)
    if not scopes:
        raise ClaimsError(f"role {role} over a {kind} needs the claim {claim!r}; the ID "
                          "token has none")
    try:
        return [Grant(role, kind, scope) for scope in scopes]
    except GrantError as exc:
        raise ClaimsError(str(exc)) from None


def _claim_of(kind: ScopeKind, oidc: Oidc) -> str:
    return oidc.agency_claim if kind is ScopeKind.AGENCY else oidc.region_claim


def _strings(value: Any, claim: str) -> list[str]:
    """A claim holding one string or a list of them (providers do both)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise ClaimsError(f"claim {claim!r} must be a string or a list of strings, "
                          f"not {value!r}")
    return [v.strip() for v in items if v.strip()]
