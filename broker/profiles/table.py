"""The profile table, as data: every adjustment (name, direction, what it does, where the
behaviour is documented) and every profile (which adjustments, in which order).

docs/peer-profiles.md holds this table as `markdown()` renders it; a test keeps the two
the same (`run.py agency profiles --markdown` prints it).
"""

from __future__ import annotations

from broker.profiles import fields, notes, vocabulary
from broker.profiles.model import Adjustment, Direction, Profile, Source

IN, OUT = Direction.INBOUND, Direction.OUTBOUND

_CROSSLINK = "https://github.com/indexdata/crosslink/blob/251163a430eb23f5e7b98b0fadfe3a35754fea08"
_MODRS = "https://github.com/openlibraryenvironment/mod-rs/blob/25e949b225b2c58cf660816f479de4d981c0ab8a"
_MODRS_SERVICES = f"{_MODRS}/service/grails-app/services/org/olf/rs"


def _shim(line: int, what: str) -> Source:
    return Source(f"CrossLink broker/shim/shim.go:{line} ({what})",
                  f"{_CROSSLINK}/broker/shim/shim.go#L{line}")


OPEN_CODES = Source("ISO 18626 open code lists (Annex B), as in CrossLink iso18626/opencodes.go",
                    f"{_CROSSLINK}/iso18626/opencodes.go")
ISO_4217 = Source("ISO 4217 currency codes (upper case), ISO 18626 currencyCode",
                  "https://www.iso.org/iso-4217-currency-codes.html")
ALMA_ISO = Source("Ex Libris: Alma speaks ISO 18626 (1.1 XSD) since July 2019",
                  "https://developers.exlibrisgroup.com/alma/integrations/resource_sharing/p2p/iso/")
MODRS_SEQ = Source("mod-rs ProtocolMessageBuildingService.groovy:468 (buildNote appends #seq:N#)",
                   f"{_MODRS_SERVICES}/ProtocolMessageBuildingService.groovy#L468")
MODRS_SPECIALS = Source("mod-rs iso18626/NoteSpecials.groovy (the #ReShare...# specials)",
                        f"{_MODRS}/service/src/main/groovy/org/olf/rs/iso18626/NoteSpecials.groovy")
MODRS_AGREE = Source("mod-rs ActionResponderISO18626NotificationService.groovy:40 (a note "
                     "starting #ReShareLoanConditionAgreeResponse# agrees)",
                     f"{_MODRS_SERVICES}/statemodel/actions/iso18626/"
                     "ActionResponderISO18626NotificationService.groovy#L40")
MODRS_CONDITION_COST = Source(
    "mod-rs ActionISO18626RequesterService.groovy:68 (a cost is recorded from offeredCosts "
    "with a deliveryInfo.loanCondition)",
    f"{_MODRS_SERVICES}/statemodel/actions/iso18626/ActionISO18626RequesterService.groovy#L68")
MODRS_OTHER = Source("mod-rs scenarios/supplierConditionalSupplyWithCost.json (loanCondition "
                     "\"other\" with a cost)",
                     f"{_MODRS}/service/src/integration-test/resources/scenarios/"
                     "supplierConditionalSupplyWithCost.json")
FAILURES = Source("tests/data/iso18626/FAILURES.md (what each published message shows)",
                  "../tests/data/iso18626/FAILURES.md")


def _adjustments(*items: Adjustment) -> dict[str, Adjustment]:
    table: dict[str, Adjustment] = {}
    for item in items:
        if item.name in table:
            raise ValueError(f"adjustment {item.name} is listed twice")
        table[item.name] = item
    return table


ADJUSTMENTS = _adjustments(
    # -- the hub's vocabulary: every inbound message, whatever its profile or transport --
    Adjustment("vocabulary.service_level", IN,
               "serviceLevel in the list's spelling (`rush` -> `Rush`); an unknown level "
               "is kept as sent, not defaulted", (OPEN_CODES, FAILURES),
               vocabulary.service_level),
    Adjustment("vocabulary.currency", IN,
               "currencyCode of every amount in upper case (`cny` -> `CNY`)",
               (ISO_4217,), vocabulary.currency),
    Adjustment("vocabulary.format", IN,
               "preferredFormat, itemFormat, deliveredFormat in the list's spelling "
               "(`pdf` -> `PDF`)", (OPEN_CODES,), vocabulary.item_format),
    Adjustment("vocabulary.loan_condition", IN,
               "loanCondition in the list's spelling (`watchlibraryuseonly` -> "
               "`WatchLibraryUseOnly`); others (ReShare's `other`) kept",
               (OPEN_CODES, FAILURES), vocabulary.loan_condition),
    Adjustment("vocabulary.publication_type", IN,
               "publicationType in the list's spelling (`book` -> `Book`)",
               (OPEN_CODES, _shim(496, "fixPublicationType")), vocabulary.publication_type),
    Adjustment("vocabulary.delivery_method", IN,
               "sentVia / deliveryMethod in the list's spelling (`ftp` -> `FTP`)",
               (OPEN_CODES,), vocabulary.delivery_method),
    # -- costs and statuses --
    Adjustment("costs.offered_as_delivery", IN,
               "Loaned/CopyCompleted with the charge only in offeredCosts: copied into "
               "deliveryInfo.deliveryCosts, which billing reads",
               (_shim(323, "transferOfferedCostsToDeliveryCosts: 'alma doesn't care about "
                      "the delivery costs unless the status is Loaned or CopyCompleted'"),
                FAILURES), fields.offered_as_delivery),
    Adjustment("costs.delivery_from_offered", OUT,
               "the same, on the way out: Alma reads a delivery's charge from deliveryCosts "
               "only", (_shim(323, "transferOfferedCostsToDeliveryCosts"),),
               fields.offered_as_delivery),
    Adjustment("costs.offered_with_condition", OUT,
               "deliveryCosts above zero mirrored into offeredCosts, with loanCondition "
               "`other` when none, so ReShare records the cost",
               (_shim(697, "transferDeliveryCostsToOfferedCosts"), MODRS_CONDITION_COST,
                MODRS_OTHER), fields.delivery_as_offered),
    Adjustment("status.no_expect_to_supply", OUT,
               "a supplyingAgencyMessage with status ExpectToSupply is not sent (the "
               "outbox row is SKIPPED), the requester sees the next status; a Notification "
               "with news (note, condition, cost) goes as WillSupply",
               (_shim(365, "fixStatus: 'Alma does not support the status ExpectToSupply' "
                      "(CrossLink sends WillSupply instead)"), ALMA_ISO),
               fields.no_expect_to_supply),
    Adjustment("status.alma_reason", OUT,
               "reasonForMessage as Alma acts on it: WillSupply with a condition or cost as "
               "Notification, Loaned as StatusChange, LoanCompleted as RequestResponse",
               (_shim(376, "fixReasonForMessage"),), fields.alma_reason),
    Adjustment("ids.service_level_standard", OUT,
               "a serviceLevel not in the list is sent as Standard",
               (_shim(485, "fixServiceLevel"),), vocabulary.service_level_standard),
    Adjustment("ids.item_id_codes_upper", OUT,
               "bibliographic item id codes ISBN/ISSN/ISMN in upper case, ids under other "
               "codes left out", (_shim(506, "fixBibItemIds"),), vocabulary.item_id_codes_upper),
    # -- notes --
    Adjustment("notes.strip_seq", IN,
               "ReShare's `#seq:N#` (and `#lastSeq:N#`) removed from the note; N kept with "
               "the original, an N lower than the last one logged",
               (MODRS_SEQ, _shim(39, "rsNoteRegexp, stripped for Alma and ILLiad")),
               notes.strip_seq),
    Adjustment("notes.reshare_specials", IN,
               "`#ReShareLoanConditionAgreeResponse#` -> ACCEPT; awaiting/assumed-agreed "
               "specials in words; `#ReShareAddLoanCondition#` removed",
               (MODRS_SPECIALS, _shim(613, "humanizeReShare...Note")),
               notes.reshare_specials),
    Adjustment("notes.accept_reject", IN,
               "a Notification saying only ACCEPT (any case): the acceptance, note `ACCEPT`; "
               "only REJECT: action Cancel, note `REJECT`",
               (_shim(644, "fixRequesterConditionNote"),
                _shim(128, "'condition reject is handled as a non-terminal Cancel'")),
               notes.accept_reject),
    Adjustment("notes.duplicate", IN,
               "an Unfilled whose note starts with DUPLICATE: reasonUnfilled Duplicate",
               (_shim(145, "setDuplicateReasonUnfilled"),), notes.duplicate),
    Adjustment("notes.address_blocks_in", IN,
               "`#SHIP_TO#`/`#RETURN_TO#` blocks also as requestedDeliveryInfo / returnInfo "
               "addresses where the message has none; the note keeps the block",
               (_shim(552, "MarshalShipLabel, MarshalReturnLabel, MarshalAddress"),),
               notes.address_blocks_in),
    Adjustment("notes.condition_cost_in", IN,
               "`Condition: X` / `Cost: 12.50 USD` in a note also as deliveryInfo."
               "loanCondition, offeredCosts (a request's: maximumCosts) where absent",
               (_shim(267, "prependLoanConditionOrCostToNote"),
                _shim(420, "appendMaxCostToReqNote")), notes.condition_cost_in),
    Adjustment("notes.seq_out", OUT,
               "`#seq:N#` at the end of every note, N counting the peer's messages of the "
               "transaction", (MODRS_SEQ,), notes.add_seq),
    Adjustment("notes.accept_out", OUT,
               "an acceptance (note ACCEPT ...) as `#ReShareLoanConditionAgreeResponse#` ...",
               (MODRS_AGREE, MODRS_SPECIALS), notes.accept_to_reshare),
    Adjustment("notes.url_out", OUT,
               "a copy sent by URL: `URL: <itemId>` leads the note",
               (_shim(352, "prependURLToSuppMsgNote"),), notes.url_out),
    Adjustment("notes.condition_cost_out", OUT,
               "`Condition: X, Cost: 12.50 USD` lead a supplier message's note; a request's "
               "maximumCosts as a `Cost:` line",
               (_shim(267, "prependLoanConditionOrCostToNote"),
                _shim(420, "appendMaxCostToReqNote")), notes.condition_cost_out),
    Adjustment("notes.address_blocks_out", OUT,
               "the shipping address as a `#SHIP_TO#` block in a request's note, returnInfo "
               "as a `#RETURN_TO#` block in a Loaned message's note",
               (_shim(441, "appendDeliveryAddressToReqNote"),
                _shim(249, "appendReturnAddressToSuppMsgNote")), notes.address_blocks_out),
    Adjustment("notes.unfilled_out", OUT,
               "an Unfilled sent as a Notification says `Status: Unfilled, Reason: ...` in "
               "its note", (_shim(290, "appendUnfilledStatusAndReasonUnfilled"),),
               notes.unfilled_out),
)

# Every inbound message gets these, whatever the transport (AMQP too) and profile.
VOCABULARY = ("vocabulary.service_level", "vocabulary.currency", "vocabulary.format",
              "vocabulary.loan_condition", "vocabulary.publication_type",
              "vocabulary.delivery_method")


def _profiles(*items: Profile) -> dict[str, Profile]:
    table = {p.name: p for p in items}
    for p in items:
        for name in (*p.inbound, *p.outbound):
            direction = IN if name in p.inbound else OUT
            if name not in ADJUSTMENTS or ADJUSTMENTS[name].direction is not direction:
                raise ValueError(f"profile {p.name}: no {direction} adjustment {name}")
    return table


DEFAULT_PROFILE = "strict"

PROFILES = _profiles(
    Profile("strict", "ISO 18626 as written (the default)",
            inbound=VOCABULARY, outbound=(),
            about="Any system that follows ISO 18626 (1.2 or 2021) as written; the hub's "
                  "AMQP members get the same. Only the vocabulary is normalised."),
    Profile("alma", "Ex Libris Alma (and Rapido)",
            inbound=(*VOCABULARY, "costs.offered_as_delivery", "notes.accept_reject",
                     "notes.duplicate"),
            outbound=("status.no_expect_to_supply", "status.alma_reason",
                      "costs.delivery_from_offered", "notes.url_out",
                      "notes.condition_cost_out", "notes.address_blocks_out",
                      "notes.unfilled_out", "ids.service_level_standard",
                      "ids.item_id_codes_upper"),
            about="Alma has no ExpectToSupply, puts a charge in offeredCosts, shows notes "
                  "rather than several elements (conditions, costs, addresses, a URL), and "
                  "its staff answer conditions with ACCEPT or REJECT."),
    Profile("illiad", "OCLC ILLiad and Tipasa",
            inbound=(*VOCABULARY, "notes.accept_reject", "notes.duplicate"),
            outbound=("ids.service_level_standard", "ids.item_id_codes_upper"),
            about="As CrossLink's ILLiad shim: notes answer conditions (ACCEPT/REJECT) and "
                  "mark duplicates; only the listed service levels and item id codes."),
    Profile("worldshare", "OCLC WorldShare ILL",
            inbound=VOCABULARY, outbound=(),
            about="No public source documents how WorldShare ILL departs from ISO 18626, so "
                  "it is treated as strict; an adjustment is added when one is documented."),
    Profile("reshare", "ReShare (FOLIO mod-rs)",
            inbound=(*VOCABULARY, "notes.strip_seq", "notes.reshare_specials"),
            outbound=("costs.offered_with_condition", "notes.accept_out", "notes.seq_out"),
            about="ReShare numbers its notes (#seq:N#), writes loan-condition steps as "
                  "#ReShare...# specials and reads a cost only as a loan condition's."),
    Profile("crosslink", "Index Data CrossLink broker",
            inbound=(*VOCABULARY, "notes.strip_seq", "notes.reshare_specials",
                     "notes.accept_reject", "notes.duplicate", "notes.address_blocks_in",
                     "notes.condition_cost_in"),
            outbound=(),
            about="A broker relays its members' notes (ReShare's markers, Alma's answers) "
                  "and writes what Alma cannot read from elements into notes; it reads the "
                  "standard and adapts for its own members itself."),
)

PROFILE_NAMES = tuple(PROFILES)


def markdown() -> str:
    """The profile table (profile x adjustment) and the adjustments with their sources."""
    names = list(PROFILE_NAMES)
    lines = ["| adjustment | direction | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for adj in ADJUSTMENTS.values():
        marks = ["x" if adj.name in (*PROFILES[p].inbound, *PROFILES[p].outbound) else ""
                 for p in names]
        lines.append(f"| `{adj.name}` | {adj.direction} | " + " | ".join(marks) + " |")
    lines += ["", "| adjustment | what it does | sources |", "|---|---|---|"]
    for adj in ADJUSTMENTS.values():
        sources = "; ".join(f"[{s.label}]({s.url})" for s in adj.sources)
        lines.append(f"| `{adj.name}` | {adj.summary} | {sources} |")
    lines += ["", "| profile | system | about |", "|---|---|---|"]
    for profile in PROFILES.values():
        lines.append(f"| `{profile.name}` | {profile.title} | {profile.about} |")
    return "\n".join(lines) + "\n"
