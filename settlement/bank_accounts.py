"""Agencies' bank accounts: the accounts the centre pays to (issue 17), kept as data.

An account is an IBAN (checked by `schwifty`: structure, length per country, the
mod-97 check digits), with an optional BIC, or a domestic account: in China an account
number of 8 to 32 digits at a bank named by its 12-digit CNAPS code (another country's
domestic account: letters and digits, with its clearing code). Every change is a new
row of `agency_bank_account` (migration 0023); the current account is the latest row,
and removing an account writes a row without one.

The full account number is needed in exactly two places: the bank file
(settlement/pain001.py) and matching a bank statement's counterpart to an agency
(`agency_for_account`). Everywhere else it is masked: a `BankAccount` prints as
'**** 6789' (repr, str, f-strings, the CLI), and no error raised here names it, so it
reaches no log and no traceback.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass
from typing import Any

import asyncpg
from schwifty import BIC, IBAN
from schwifty import exceptions as sw

from infra.database import Connection
from schemas.settings import Payments, env_name

CENTRE_HOLDER = "CENTRE"        # the `agency` of the centre's own account (settings)
HOLDER_MAX = 140                # ISO 20022 Max140Text: a party's name in pain.001
BANK_NAME_MAX = 140
CNAPS = re.compile(r"[0-9]{12}")
CN_ACCOUNT = re.compile(r"[0-9]{8,32}")
OTHER_ACCOUNT = re.compile(r"[A-Z0-9]{1,34}")       # ISO 20022 Othr/Id: Max34Text
OTHER_BANK_CODE = re.compile(r"[A-Z0-9]{1,35}")     # ClrSysMmbId/MmbId: Max35Text
COUNTRY = re.compile(r"[A-Z]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AccountScheme(enum.StrEnum):
    IBAN = "iban"              # an IBAN; bank_code an optional BIC
    DOMESTIC = "domestic"      # a national account number; bank_code its clearing code


class BankAccountError(ValueError):
    """An account that cannot be kept; the message says why and never holds the number."""


class CentreAccountMissing(BankAccountError):
    """The centre's own account (the debtor of every payment) is not set or not valid."""


def mask(account_id: str) -> str:
    """An account number as it may be shown: its last four characters only."""
    return "**** " + account_id[-4:] if len(account_id) > 4 else "****"


def normalise(account_id: str) -> str:
    """An account number as stored and compared: no spaces, upper case."""
    return "".join(account_id.split()).upper()


@dataclass(frozen=True, repr=False)
class BankAccount:
    """An agency's current account. Print it freely: the number is always masked."""

    agency: str
    holder: str
    scheme: AccountScheme
    account_id: str                 # normalised; only for the bank file and matching
    bank_code: str | None           # BIC (scheme iban), clearing code (domestic)
    bank_name: str | None
    country: str                    # ISO 3166 alpha-2
    changed_by: str | None = None
    changed_at: datetime.datetime | None = None

    @property
    def masked(self) -> str:
        return mask(self.account_id)

    @property
    def bic(self) -> str | None:
        """The BIC of an IBAN account's bank, if known."""
        return self.bank_code if self.scheme is AccountScheme.IBAN else None

    @property
    def clearing_code(self) -> str | None:
        """A domestic account's bank: its clearing code (CN: CNAPS)."""
        return self.bank_code if self.scheme is AccountScheme.DOMESTIC else None

    def __repr__(self) -> str:
        return (f"BankAccount(agency={self.agency!r}, holder={self.holder!r}, "
                f"scheme={self.scheme.value!r}, account={self.masked!r}, "
                f"bank_code={self.bank_code!r}, country={self.country!r})")

    def __str__(self) -> str:
        bank = f" at {self.bank_code}" if self.bank_code else ""
        return f"{self.holder} {self.scheme.value} {self.masked}{bank}"

    def to_json(self) -> dict[str, Any]:
        """What the CLI and pages show (masked)."""
        return {"agency": self.agency, "holder": self.holder, "scheme": self.scheme.value,
                "account": self.masked, "bankCode": self.bank_code,
                "bankName": self.bank_name, "country": self.country,
                "changedBy": self.changed_by,
                "changedAt": self.changed_at.isoformat() if self.changed_at else None}


# --------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------

# schwifty's own messages quote the IBAN; ours say the same without it.
_IBAN_PROBLEMS: tuple[tuple[type[Exception], str], ...] = (
    (sw.InvalidChecksumDigits, "its check digits do not match (a mistyped character?)"),
    (sw.InvalidLength, "it has the wrong length for its country"),
    (sw.InvalidCountryCode, "it does not start with a country that uses IBANs"),
    (sw.InvalidBBANChecksum, "its national check digits do not match"),
    (sw.InvalidStructure, "it has characters or a layout its country does not allow"),
)


def _text(value: str | None, what: str, limit: int, *, required: bool) -> str | None:
    text = (value or "").strip()
    if not text:
        if required:
            raise BankAccountError(f"the {what} is required")
        return None
    if len(text) > limit:
        raise BankAccountError(f"the {what} is {len(text)} characters; at most {limit}")
    if _CONTROL.search(text):
        raise BankAccountError(f"the {what} holds a line break or control character")
    return text


def check_iban(text: str) -> IBAN:
    try:
        return IBAN(normalise(text))
    except sw.SchwiftyException as exc:
        why = next((m for t, m in _IBAN_PROBLEMS if isinstance(exc, t)), "it is malformed")
        raise BankAccountError(f"not a valid IBAN: {why}") from None


def check_bic(text: str) -> str:
    code = normalise(text)
    try:
        return str(BIC(code))
    except sw.InvalidLength:
        raise BankAccountError(f"BIC {code!r} must be 8 or 11 characters") from None
    except sw.InvalidCountryCode:
        raise BankAccountError(f"BIC {code!r} names no known country (characters "
                               "5-6)") from None
    except sw.SchwiftyException:
        raise BankAccountError(f"BIC {code!r} is malformed (4 letters of the bank, 2 of "
                               "the country, 2 of the location, 3 of the branch "
                               "optional)") from None


def _country(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    code = value.strip().upper()
    if not COUNTRY.fullmatch(code):
        raise BankAccountError(f"country {value!r} is not an ISO 3166 code of two letters "
                               "(e.g. CN)")
    return code


def account(agency: str, holder: str, *, iban: str | None = None, bic: str | None = None,
            account_id: str | None = None, bank_code: str | None = None,
            bank_name: str | None = None, country: str | None = None) -> BankAccount:
    """A validated account: an IBAN (with an optional BIC) or a domestic account
    number with its bank's clearing code (CN: CNAPS, the default country).
    BankAccountError says what is wrong, never quoting the number."""
    name = _text(holder, "account holder's name", HOLDER_MAX, required=True) or ""
    bank = _text(bank_name, "bank name", BANK_NAME_MAX, required=False)
    wanted = _country(country)
    if (iban is None) == (account_id is None):
        raise BankAccountError("give either an IBAN or a domestic account number with "
                               "its bank code, not both")
    if iban is not None:
        if bank_code is not None:
            raise BankAccountError("an IBAN account takes a BIC, not a domestic bank code")
        parsed = check_iban(iban)
        if wanted is not None and wanted != parsed.country_code:
            raise BankAccountError(f"the IBAN is of country {parsed.country_code}, not "
                                   f"{wanted}")
        return BankAccount(agency, name, AccountScheme.IBAN, parsed.compact,
                           check_bic(bic) if bic else None, bank, parsed.country_code)
    if bic is not None:
        raise BankAccountError("a domestic account takes its bank's clearing code "
                               "(--bank-code), not a BIC")
    number = normalise(account_id or "")
    code = normalise(bank_code or "")
    where = wanted or "CN"
    if where == "CN":
        if not number.isdigit():
            raise BankAccountError("a Chinese account number has digits only")
        if not CN_ACCOUNT.fullmatch(number):
            raise BankAccountError(f"a Chinese account number has 8 to 32 digits, not "
                                   f"{len(number)}")
        if not CNAPS.fullmatch(code):
            raise BankAccountError(f"the bank code of a Chinese account is its CNAPS code "
                                   f"of 12 digits, not {bank_code!r}")
    else:
        if not OTHER_ACCOUNT.fullmatch(number):
            raise BankAccountError("a domestic account number has 1 to 34 letters and "
                                   "digits")
        if not OTHER_BANK_CODE.fullmatch(code):
            raise BankAccountError(f"bank code {bank_code!r} must be 1 to 35 letters and "
                                   "digits (the country's clearing code)")
    return BankAccount(agency, name, AccountScheme.DOMESTIC, number, code, bank, where)


_IBAN_SHAPE = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}")


def centre_account(rules: Payments) -> BankAccount:
    """The centre's own account from settings (the debtor of every payment file): an
    IBAN (with its BIC, if set), or else a Chinese domestic account with its bank's
    CNAPS code. CentreAccountMissing if it is unset or invalid."""
    number = rules.centre_account
    if not number or not number.strip():
        raise CentreAccountMissing(
            f"the centre's bank account is not set: set {env_name('payments', 'centre_account')}"
            f" (an IBAN or a domestic account number) and "
            f"{env_name('payments', 'centre_bank_code')} (a BIC, or the 12-digit CNAPS code)")
    code = rules.centre_bank_code
    try:
        if _IBAN_SHAPE.fullmatch(normalise(number)):
            return account(CENTRE_HOLDER, rules.centre_name, iban=number, bic=code)
        return account(CENTRE_HOLDER, rules.centre_name, account_id=number,
                       bank_code=code or "", country="CN")
    except BankAccountError as exc:
        raise CentreAccountMissing(f"the centre's bank account in the settings "
                                   f"({env_name('payments', 'centre_account')}): {exc}"
                                   ) from None


# --------------------------------------------------------------------------
# storage
# --------------------------------------------------------------------------

ACCOUNT_COLUMNS = """agency, holder_name, scheme, account_id, bank_code, bank_name, country,
    changed_by, changed_at"""

INSERT_ACCOUNT = """INSERT INTO agency_bank_account (agency, holder_name, scheme,
        account_id, bank_code, bank_name, country, changed_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    RETURNING changed_at"""

# The latest row of each agency (a removal is a row whose scheme is NULL).
LATEST = f"""SELECT DISTINCT ON (agency) {ACCOUNT_COLUMNS} FROM agency_bank_account
    WHERE ($1::text IS NULL OR agency = $1)
    ORDER BY agency, id DESC"""

SELECT_CURRENT = f"SELECT * FROM ({LATEST}) c WHERE scheme IS NOT NULL ORDER BY agency"

SELECT_AGENCY_FOR_ACCOUNT = f"""SELECT agency FROM ({LATEST}) c
    WHERE account_id = $2 LIMIT 2"""

SELECT_HISTORY = f"""SELECT {ACCOUNT_COLUMNS} FROM agency_bank_account
    WHERE agency = $1 ORDER BY id"""


def _row(r: Any) -> BankAccount:
    return BankAccount(r["agency"], r["holder_name"], AccountScheme(r["scheme"]),
                       r["account_id"], r["bank_code"], r["bank_name"], r["country"],
                       r["changed_by"], r["changed_at"])


async def _insert(conn: Connection, agency: str, a: BankAccount | None, actor: str
                  ) -> datetime.datetime:
    values = ((a.holder, a.scheme.value, a.account_id, a.bank_code, a.bank_name, a.country)
              if a is not None else (None,) * 6)
    try:
        at: datetime.datetime = await conn.fetchval(INSERT_ACCOUNT, agency, *values, actor)
    except asyncpg.ForeignKeyViolationError:
        raise BankAccountError(f"no agency {agency!r}") from None
    return at


async def set_account(conn: Connection, agency: str, holder: str, *, actor: str,
                      iban: str | None = None, bic: str | None = None,
                      account_id: str | None = None, bank_code: str | None = None,
                      bank_name: str | None = None, country: str | None = None
                      ) -> BankAccount:
    """Validate and keep an agency's account (a new row; the earlier ones stay)."""
    a = account(agency, holder, iban=iban, bic=bic, account_id=account_id,
                bank_code=bank_code, bank_name=bank_name, country=country)
    at = await _insert(conn, agency, a, actor)
    return BankAccount(a.agency, a.holder, a.scheme, a.account_id, a.bank_code, a.bank_name,
                       a.country, actor, at)


async def remove_account(conn: Connection, agency: str, *, actor: str) -> bool:
    """The agency has no account from now on; False if it had none."""
    if await current(conn, agency) is None:
        return False
    await _insert(conn, agency, None, actor)
    return True


async def current(conn: Connection, agency: str) -> BankAccount | None:
    row = await conn.fetchrow(SELECT_CURRENT, agency)
    return _row(row) if row is not None else None


async def all_current(conn: Connection) -> dict[str, BankAccount]:
    """Every agency's current account, by agency symbol."""
    return {r["agency"]: _row(r) for r in await conn.fetch(SELECT_CURRENT, None)}


async def history(conn: Connection, agency: str) -> list[BankAccount | None]:
    """An agency's accounts in the order they were set (None: a removal)."""
    return [_row(r) if r["scheme"] is not None else None
            for r in await conn.fetch(SELECT_HISTORY, agency)]


async def agency_for_account(conn: Connection, account_id: str) -> str | None:
    """The agency whose current account has this number (spaces and case ignored);
    None if none has, or if more than one does (the payment cannot be attributed)."""
    rows = await conn.fetch(SELECT_AGENCY_FOR_ACCOUNT, None, normalise(account_id))
    return rows[0]["agency"] if len(rows) == 1 else None
