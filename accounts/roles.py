"""Roles as data: what each role may do, and over which agencies.

A person holds grants; a grant is a role over a scope: the whole consortium, a region
(a province, as agencies are registered: graded management, 分级管理), or one agency.
Permissions come from the role (`ROLE_PERMISSIONS`), reach from the scope. What a
person may see is computed here once (`Principal.reach`) and handed to the queries,
which filter by it themselves (`Reach.sql_args`): hiding a link is never the check.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"                # the consortium's operators: everything
    REGIONAL_ADMIN = "regional_admin"    # a provincial centre: its region's agencies
    FINANCE = "finance"                  # the centre's finance office, or one library's
    LIBRARY_STAFF = "library_staff"      # a library's ILL staff: its own agency
    AUDITOR = "auditor"                  # read-only, everything in scope


class Permission(StrEnum):
    VIEW_DASHBOARD = "view_dashboard"          # volumes, scorecards, dead letters
    VIEW_TRANSACTIONS = "view_transactions"    # transactions, their trails and messages
    ACT_ON_TRANSACTIONS = "act_on_transactions"  # cancel, answer, received, returned
    VIEW_FINANCE = "view_finance"              # statements, budgets, ledger
    VIEW_FLAGS = "view_flags"
    MANAGE_PEOPLE = "manage_people"            # accounts, grants, unlocks
    MANAGE_TOKENS = "manage_tokens"            # API tokens of the agencies in reach
    VIEW_AUDIT = "view_audit"                  # the audit of people's actions
    DISPUTE_STATEMENTS = "dispute_statements"  # contest a line of a statement in reach
    SETTLE_ACCOUNTS = "settle_accounts"        # record payments, resolve disputes


class ScopeKind(StrEnum):
    CONSORTIUM = "consortium"
    REGION = "region"
    AGENCY = "agency"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.OPERATOR: frozenset(Permission),
    Role.REGIONAL_ADMIN: frozenset({
        Permission.VIEW_DASHBOARD, Permission.VIEW_TRANSACTIONS,
        Permission.ACT_ON_TRANSACTIONS, Permission.VIEW_FINANCE, Permission.VIEW_FLAGS,
        Permission.MANAGE_TOKENS, Permission.VIEW_AUDIT}),
    Role.FINANCE: frozenset({Permission.VIEW_FINANCE, Permission.MANAGE_TOKENS,
                             Permission.DISPUTE_STATEMENTS, Permission.SETTLE_ACCOUNTS}),
    Role.LIBRARY_STAFF: frozenset({
        Permission.VIEW_TRANSACTIONS, Permission.ACT_ON_TRANSACTIONS,
        Permission.VIEW_FINANCE, Permission.VIEW_FLAGS, Permission.MANAGE_TOKENS,
        Permission.DISPUTE_STATEMENTS}),
    Role.AUDITOR: frozenset({
        Permission.VIEW_DASHBOARD, Permission.VIEW_TRANSACTIONS, Permission.VIEW_FINANCE,
        Permission.VIEW_FLAGS, Permission.VIEW_AUDIT}),
}

# Permissions that hold only over the whole consortium: the centre settles accounts. A
# library's own finance officer holds the finance role, but must never record payments
# against its own statement or resolve its own dispute, so over an agency or a region
# these reach nothing (`Principal.reach`).
CONSORTIUM_ONLY: frozenset[Permission] = frozenset({Permission.SETTLE_ACCOUNTS})

# The scopes each role may be granted over (an operator is consortium-wide by nature;
# a library's staff work for one agency).
ROLE_SCOPES: dict[Role, frozenset[ScopeKind]] = {
    Role.OPERATOR: frozenset({ScopeKind.CONSORTIUM}),
    Role.REGIONAL_ADMIN: frozenset({ScopeKind.REGION}),
    Role.FINANCE: frozenset({ScopeKind.CONSORTIUM, ScopeKind.AGENCY}),
    Role.LIBRARY_STAFF: frozenset({ScopeKind.AGENCY}),
    Role.AUDITOR: frozenset({ScopeKind.CONSORTIUM, ScopeKind.REGION, ScopeKind.AGENCY}),
}


class GrantError(ValueError):
    """A grant that cannot be: the message says what is wrong."""


@dataclass(frozen=True, order=True)
class Grant:
    role: Role
    scope_kind: ScopeKind
    scope: str = ""          # "" for the consortium, a province, or an agency symbol

    def __post_init__(self) -> None:
        if self.scope_kind not in ROLE_SCOPES[self.role]:
            allowed = ", ".join(sorted(ROLE_SCOPES[self.role]))
            raise GrantError(f"{self.role} can be granted over {allowed}, not "
                             f"{self.scope_kind}")
        if (self.scope_kind is ScopeKind.CONSORTIUM) != (self.scope == ""):
            raise GrantError("a consortium grant names no scope; a region or agency grant "
                             "names one")

    def __str__(self) -> str:
        where = "consortium" if self.scope_kind is ScopeKind.CONSORTIUM \
            else f"{self.scope_kind} {self.scope}"
        return f"{self.role} @ {where}"

    @classmethod
    def parse(cls, role: str, scope: str | None) -> Grant:
        """`role` and `consortium` | `region:PROVINCE` | `agency:SYMBOL` (CLI form)."""
        try:
            r = Role(role)
        except ValueError:
            raise GrantError(f"unknown role {role!r}: one of "
                             f"{', '.join(x.value for x in Role)}") from None
        if scope in (None, "", "consortium"):
            return cls(r, ScopeKind.CONSORTIUM)
        kind, sep, value = scope.partition(":")
        if not sep or not value or kind not in (ScopeKind.REGION, ScopeKind.AGENCY):
            raise GrantError(f"scope {scope!r}: say consortium, region:PROVINCE or "
                             "agency:SYMBOL")
        return cls(r, ScopeKind(kind), value)


@dataclass(frozen=True)
class Reach:
    """The agencies a permission reaches: all of them, or these regions and agencies."""

    everything: bool
    regions: frozenset[str] = frozenset()
    agencies: frozenset[str] = frozenset()

    @property
    def nothing(self) -> bool:
        return not self.everything and not self.regions and not self.agencies

    def sql_args(self) -> tuple[bool, list[str], list[str]]:
        """For a query's `($1 OR a.province = ANY($2) OR a.symbol = ANY($3))`."""
        return self.everything, sorted(self.regions), sorted(self.agencies)

    def covers(self, symbol: str, province: str | None) -> bool:
        return self.everything or symbol in self.agencies or \
            (province is not None and province in self.regions)


NO_REACH = Reach(everything=False)


@dataclass(frozen=True)
class Principal:
    """A signed-in person (or an API token acting for one) and what they may do."""

    person_id: int
    login: str
    display_name: str
    grants: frozenset[Grant]

    @property
    def label(self) -> str:
        """How pages name the person: display name and login."""
        return f"{self.display_name} ({self.login})"

    def can(self, permission: Permission) -> bool:
        return not self.reach(permission).nothing

    def reach(self, permission: Permission) -> Reach:
        """Over which agencies `permission` holds (NO_REACH when it does not at all)."""
        granted = [g for g in self.grants if permission in ROLE_PERMISSIONS[g.role]]
        if any(g.scope_kind is ScopeKind.CONSORTIUM for g in granted):
            return Reach(everything=True)
        if permission in CONSORTIUM_ONLY:
            return NO_REACH
        return Reach(everything=False,
                     regions=frozenset(g.scope for g in granted
                                       if g.scope_kind is ScopeKind.REGION),
                     agencies=frozenset(g.scope for g in granted
                                        if g.scope_kind is ScopeKind.AGENCY))

    @property
    def roles(self) -> frozenset[Role]:
        return frozenset(g.role for g in self.grants)
