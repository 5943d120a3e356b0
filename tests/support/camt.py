"""Bank statements (camt.053/054) for tests, BUILT with a bank-statement library: pyiso20022's
dataclasses (generated from the ISO 20022 XSDs, one module per message version) filled from
a description in the messages' own element names by xsdata's DictDecoder (which refuses an
element the version does not have) and written by xsdata's XmlSerializer."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pyiso20022.camt.camt_053_001_02 import Document as Statement02
from pyiso20022.camt.camt_053_001_08 import Document as Statement08
from pyiso20022.camt.camt_054_001_08 import Document as Notification08
from xsdata.formats.dataclass.parsers import DictDecoder
from xsdata.formats.dataclass.serializers import XmlSerializer
from xsdata.formats.dataclass.serializers.config import SerializerConfig

CENTRE_ACCOUNT = "110060149018170012345"     # a domestic (CN) account: Acct/Id/Othr/Id
DOCUMENTS: dict[str, Any] = {"camt.053.001.02": Statement02, "camt.053.001.08": Statement08,
                             "camt.054.001.08": Notification08}


def tx(amount: str | None = None, *, party: str | None = None, account: str | None = None,
       iban: str | None = None, e2e: str | None = None, ustrd: list[str] | None = None,
       strd: str | None = None, ccy: str = "CNY") -> dict[str, Any]:
    """One transaction detail (TxDtls), version-neutral; `build` shapes it per version."""
    return {"amount": amount, "party": party, "account": account, "iban": iban, "e2e": e2e,
            "ustrd": ustrd or [], "strd": strd, "ccy": ccy}


def ntry(amount: str, side: str, *, ref: str | None = None, status: str = "BOOK",
         booked: str = "1901-04-05", details: list[dict[str, Any]] | None = None,
         ccy: str = "CNY") -> dict[str, Any]:
    return {"amount": amount, "side": side, "ref": ref, "status": status, "booked": booked,
            "details": details or [], "ccy": ccy}


def _minor(version: str) -> int:
    return int(version.rsplit(".", 1)[1])


def _account(iban: str | None, other: str | None) -> dict[str, Any]:
    return {"Id": {"IBAN": iban} if iban else {"Othr": {"Id": other}}}


def _tx_dict(t: dict[str, Any], side: str, version: str) -> dict[str, Any]:
    v = _minor(version)
    out: dict[str, Any] = {}
    if t["e2e"]:
        out["Refs"] = {"EndToEndId": t["e2e"]}
    if t["amount"] is not None:
        money = {"value": Decimal(t["amount"]), "Ccy": t["ccy"]}
        # 001.02 carries a detail's amount only in AmtDtls/TxAmt.
        out.update({"AmtDtls": {"TxAmt": {"Amt": money}}} if v < 3 else {"Amt": money})
    role = "Dbtr" if side == "CRDT" else "Cdtr"
    parties: dict[str, Any] = {}
    if t["party"]:
        # From 001.08 a party sits in <Pty> (Party40Choice).
        parties[role] = {"Pty": {"Nm": t["party"]}} if v >= 8 else {"Nm": t["party"]}
    if t["account"] or t["iban"]:
        parties[f"{role}Acct"] = _account(t["iban"], t["account"])
    if parties:
        out["RltdPties"] = parties
    remittance: dict[str, Any] = {}
    if t["ustrd"]:
        remittance["Ustrd"] = t["ustrd"]
    if t["strd"]:
        remittance["Strd"] = [{"CdtrRefInf": {"Ref": t["strd"]}}]
    if remittance:
        out["RmtInf"] = remittance
    return out


def _entry_dict(e: dict[str, Any], version: str) -> dict[str, Any]:
    v = _minor(version)
    out: dict[str, Any] = {"Amt": {"value": Decimal(e["amount"]), "Ccy": e["ccy"]},
                           "CdtDbtInd": e["side"],
                           "Sts": e["status"] if v < 3 else {"Cd": e["status"]},
                           "BookgDt": {"Dt": e["booked"]},
                           "BkTxCd": {"Prtry": {"Cd": "TRF"}}}
    if e["ref"]:
        out["AcctSvcrRef"] = e["ref"]
    if e["details"]:
        out["NtryDtls"] = [{"TxDtls": [_tx_dict(t, e["side"], version)
                                       for t in e["details"]]}]
    return out


def build(name: str, entries: list[dict[str, Any]], *, msg_id: str = "MSG-1",
          account: str = CENTRE_ACCOUNT, iban: str | None = None) -> bytes:
    """A camt.053/054 file of one statement (notification) on `account`."""
    kind, version = name[:8], name[9:]
    body, statement = (("BkToCstmrStmt", "Stmt") if kind == "camt.053"
                       else ("BkToCstmrDbtCdtNtfctn", "Ntfctn"))
    stmt: dict[str, Any] = {"Id": f"{msg_id}-S", "CreDtTm": "1901-04-06T08:00:00",
                            "Acct": {**_account(iban, None if iban else account),
                                     "Ccy": "CNY"},
                            "Ntry": [_entry_dict(e, version) for e in entries]}
    if kind == "camt.053":
        stmt["Bal"] = [{"Tp": {"CdOrPrtry": {"Cd": "CLBD"}},
                        "Amt": {"value": Decimal("1000.00"), "Ccy": "CNY"},
                        "CdtDbtInd": "CRDT", "Dt": {"Dt": "1901-04-05"}}]
    data = {body: {"GrpHdr": {"MsgId": msg_id, "CreDtTm": "1901-04-06T08:00:00"},
                   statement: [stmt]}}
    document = DictDecoder().decode(data, DOCUMENTS[name])
    xml = XmlSerializer(config=SerializerConfig(indent="  ")).render(
        document, ns_map={None: f"urn:iso:std:iso:20022:tech:xsd:{name}"})
    return xml.encode()
