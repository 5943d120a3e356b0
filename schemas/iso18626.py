"""ISO 18626 messages in their JSON form (ARCHITECTURE §3.3).

The JSON mirrors the ISO 18626 XML element names (camelCase, XSD nesting,
repeatable elements as arrays), so JSON <-> XML stays mechanical. Source: the
ISO 18626 XSD version 1.2 (namespace http://illtransactions.org/2013/iso18626),
with the optional elements that the 2021 revision (XSD "2021-2") added where
they do not clash with 1.2, and the 2021 corrections that made request-header
`supplyingAgencyId` and `multipleItemRequestId` optional. Where 1.2 and 2021
disagree (2021 renamed `sentVia` to `deliveryMethod`, made `itemId`, `volume`,
`deliveryCosts`, `errorData` repeatable, and closed a few more values), 1.2's
form is the contract; 2021-only forms still pass through as unknown fields. Where
the hub acts on an element that has both forms, one accessor reads either
(`DeliveryInfo.method`: `sentVia` or 2021's `deliveryMethod`).

One leniency, for what ILL systems send (ARCHITECTURE §3.4): a supplyingAgencyMessage
whose reasonForMessage is Notification may leave `statusInfo.status` empty or out
(Alma and Rapido do, to mean "no change"), and `statusInfo.lastChange` or the whole
`statusInfo` with it; so may a CancelResponse that answers Y or N (ReShare's
"cancel declined" has no statusInfo: its answer says what happened). Every other
reason needs both, as the XSD says.

Unknown elements are kept and passed on, never dropped: every model allows
extra fields, and serialising puts them back verbatim.

`parse_message` turns any problem into a `MessageError` carrying the ISO 18626
errorType and an errorValue that names the element by its wire path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from schemas.iso18626_codes import (
    Action,
    ErrorType,
    MessageStatus,
    MessageType,
    PreferredEdition,
    ReasonForMessage,
    RequestSubType,
    RequestType,
    ServiceKind,
    ServiceType,
    Status,
    YesNo,
)
from schemas.iso18626_errors import MESSAGE_TYPES, explain, json_kind, show
from schemas.iso18626_errors import MessageError as MessageError
from schemas.symbols import split_symbol

NAMESPACE = "http://illtransactions.org/2013/iso18626"
XSD_VERSION = "1.2"

# --------------------------------------------------------------------------
# Simple types. Open code lists (type_schemeValuePair) are plain strings.
# --------------------------------------------------------------------------

# xs:dateTime lexical form; pydantic alone would also take dates, unix numbers, etc.
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})?")
_XSD_DECIMAL = r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)"
_DECIMAL = re.compile(_XSD_DECIMAL)


def _empty_is_absent(value: Any) -> Any:
    """An empty (or blank) value stands for a missing element."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _element_error(element: str, error_type: ErrorType, message: str) -> PydanticCustomError:
    """A problem with one element below the model being validated (`element` is its wire
    path from there), reported by `_explain` as `errorType` and `<path>: <message>`."""
    return PydanticCustomError("element", "{message}", {
        "element": element, "iso_error": str(error_type), "message": message})


def _iso_datetime(value: Any) -> Any:
    if isinstance(value, datetime) or (isinstance(value, str) and _DATETIME.fullmatch(value)):
        return value
    raise PydanticCustomError("iso_datetime", "not an ISO 8601 dateTime")


# No fee comes near it, and larger amounts overflow the ledger's integer minor units.
MAX_AMOUNT = Decimal(10) ** 15


def _decimal_text(value: Any) -> Any:
    # Floats are refused: a JSON number may already have lost the sender's digits.
    if not (isinstance(value, Decimal) or (isinstance(value, int) and not isinstance(value, bool))
            or (isinstance(value, str) and _DECIMAL.fullmatch(value))):
        raise PydanticCustomError("decimal_text", "not a decimal string")
    if abs(Decimal(value)) >= MAX_AMOUNT:
        raise PydanticCustomError("decimal_range", "not an amount below 10^15")
    return value


DateTime = Annotated[datetime, BeforeValidator(_iso_datetime)]
DecimalText = Annotated[
    Decimal,
    BeforeValidator(_decimal_text),
    # Never exponent notation ("1E+2"), which xs:decimal (and _decimal_text) refuses.
    PlainSerializer(lambda value: format(value, "f"), return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": f"^{_XSD_DECIMAL}$", "examples": ["12.50"]}),
]
SortOrder = Annotated[int, Field(ge=0)]


class Iso18626Model(BaseModel):
    """Base of every element: camelCase wire names, unknown fields kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow",
        # JSON Schema titles in wire names ("currencyCode", not "Currencycode").
        field_title_generator=lambda name, info: info.alias or to_camel(name),
    )

    @model_serializer(mode="wrap")
    def _keep_unknown(self, handler: SerializerFunctionWrapHandler,
                      info: SerializationInfo) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)  # pydantic types the handler's result as Any
        # exclude_none would drop an unknown field whose value is null; it is not ours to drop.
        for key, value in (self.model_extra or {}).items():
            if value is None and key not in data:
                data[key] = None
        return data


# --------------------------------------------------------------------------
# Elements
# --------------------------------------------------------------------------


class AgencyId(Iso18626Model):
    agency_id_type: str
    agency_id_value: str

    @property
    def symbol(self) -> str:
        return f"{self.agency_id_type}:{self.agency_id_value}"

    @classmethod
    def from_symbol(cls, symbol: str) -> AgencyId:
        scheme, value = split_symbol(symbol)
        return cls(agency_id_type=scheme, agency_id_value=value)


class RequestingAgencyAuthentication(Iso18626Model):
    account_id: str | None = None
    security_code: str | None = Field(None, repr=False)


class Header(Iso18626Model):
    """`header`. supplyingAgencyId is optional only in a request (the hub chooses)."""

    supplying_agency_id: AgencyId | None = None
    requesting_agency_id: AgencyId
    consortial_id: AgencyId | None = None
    multiple_item_request_id: str | None = None
    timestamp: DateTime
    requesting_agency_request_id: str
    supplying_agency_request_id: str | None = None
    requesting_agency_authentication: RequestingAgencyAuthentication | None = None


class MessageHeader(Header):
    """The header of supplyingAgencyMessage and requestingAgencyMessage: both parties named."""

    supplying_agency_id: AgencyId


class ConfirmationHeader(Iso18626Model):
    supplying_agency_id: AgencyId | None = None
    requesting_agency_id: AgencyId | None = None
    timestamp: DateTime
    requesting_agency_request_id: str | None = None
    multiple_item_request_id: str | None = None
    timestamp_received: DateTime
    message_status: MessageStatus


class ErrorData(Iso18626Model):
    error_type: ErrorType
    error_value: str | None = None


# Addresses may be a patron's (requestedDeliveryInfo), so their data stays out of reprs.


class ElectronicAddress(Iso18626Model):
    electronic_address_type: str
    electronic_address_data: str = Field(repr=False)


class PhysicalAddress(Iso18626Model):
    line1: str | None = Field(None, repr=False)
    line2: str | None = Field(None, repr=False)
    locality: str | None = None
    postal_code: str | None = None
    region: str | None = None
    country: str | None = None


class Address(Iso18626Model):
    """An xs:choice: exactly one of electronicAddress and physicalAddress."""

    electronic_address: ElectronicAddress | None = None
    physical_address: PhysicalAddress | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Address:
        given = (self.electronic_address is not None) + (self.physical_address is not None)
        if given != 1:
            raise PydanticCustomError(
                "xsd_choice",
                "exactly one of electronicAddress or physicalAddress is required; got {given}",
                {"given": "both" if given else "neither"})
        return self


class Costs(Iso18626Model):
    currency_code: str
    monetary_value: DecimalText


class BibliographicItemId(Iso18626Model):
    bibliographic_item_identifier: str
    bibliographic_item_identifier_code: str


class BibliographicRecordId(Iso18626Model):
    bibliographic_record_identifier_code: str
    bibliographic_record_identifier: str


class BibliographicInfo(Iso18626Model):
    supplier_unique_record_id: str | None = None
    title: str | None = None
    author: str | None = None
    author_id: str | None = None
    subtitle: str | None = None
    series_title: str | None = None
    edition: str | None = None
    title_of_component: str | None = None
    author_of_component: str | None = None
    volume: str | None = None
    issue: str | None = None
    pages_requested: str | None = None
    estimated_no_pages: str | None = None
    bibliographic_item_id: list[BibliographicItemId] | None = None
    sponsor: str | None = None
    information_source: str | None = None
    bibliographic_record_id: list[BibliographicRecordId] | None = None


class PublicationInfo(Iso18626Model):
    publisher: str | None = None
    publisher_id: str | None = None
    publication_type: str | None = None
    publication_date: str | None = None
    place_of_publication: str | None = None


class ServiceInfo(Iso18626Model):
    request_type: RequestType | None = None
    request_sub_type: list[RequestSubType] | None = None
    requesting_agency_previous_request_id: str | None = None
    service_type: ServiceType
    service_level: str | None = None
    preferred_format: str | None = None
    item_format: str | None = None
    need_before_date: DateTime | None = None
    copyright_compliance: str | None = None
    any_edition: YesNo | None = None
    preferred_edition: PreferredEdition | None = None
    loan_condition: list[str] | None = None
    start_date: DateTime | None = None
    end_date: DateTime | None = None
    note: str | None = None


class SupplierInfo(Iso18626Model):
    sort_order: SortOrder | None = None
    supplier_code: AgencyId | None = None
    supplier_description: str | None = None
    bibliographic_record_id: BibliographicRecordId | None = None
    call_number: str | None = None
    summary_holdings: str | None = None
    availability_note: str | None = None


class RequestedDeliveryInfo(Iso18626Model):
    sort_order: SortOrder | None = None
    address: Address | None = None
    delivery_method: str | None = None
    courier_name: str | None = None


class RequestingAgencyInfo(Iso18626Model):
    name: str | None = None
    contact_name: str | None = None
    address: list[Address] | None = None


class PatronInfo(Iso18626Model):
    # Personal data (ARCHITECTURE §5): kept out of reprs, hence out of logs.
    patron_id: str | None = Field(None, repr=False)
    surname: str | None = Field(None, repr=False)
    given_name: str | None = Field(None, repr=False)
    patron_type: str | None = None
    send_to_patron: YesNo | None = None
    address: list[Address] | None = Field(None, repr=False)


class BillingInfo(Iso18626Model):
    payment_method: str | None = None
    maximum_costs: Costs | None = None
    billing_method: str | None = None
    billing_name: str | None = None
    address: Address | None = None


class HubExtensions(Iso18626Model):
    """The one documented extension object of the hub (ARCHITECTURE §3.3)."""

    service_kind: ServiceKind | None = None


class MessageInfo(Iso18626Model):
    reason_for_message: ReasonForMessage
    answer_yes_no: YesNo | None = None
    note: str | None = None
    reason_unfilled: str | None = None
    reason_retry: str | None = None
    offered_costs: Costs | None = None
    retry_after: DateTime | None = None
    retry_before: DateTime | None = None


class StatusInfo(Iso18626Model):
    """`statusInfo`. `status` and `lastChange` are required unless the message is a
    Notification (checked by `SupplyingAgencyMessage`); an empty status is no status."""

    status: Annotated[Status | None, BeforeValidator(_empty_is_absent)] = Field(
        None, description="Required unless messageInfo.reasonForMessage is Notification; "
                          "empty or absent there means no change")
    expected_delivery_date: DateTime | None = None
    due_date: DateTime | None = None
    last_change: DateTime | None = Field(
        None, description="Required unless messageInfo.reasonForMessage is Notification")


class RetryInfo(Iso18626Model):
    """`retryInfo` (2021 revision): the conditions under which a retry could be filled."""

    loan_condition: list[str] | None = None
    edition: list[str] | None = None
    item_format: list[str] | None = None
    volume: list[str] | None = None
    service_type: ServiceType | None = None
    service_level: list[str] | None = None
    delivery_method: list[str] | None = None
    courier_name: list[str] | None = None
    offered_costs: list[Costs] | None = None
    payment_method: list[str] | None = None
    retry_before: DateTime | None = None
    retry_after: DateTime | None = None


class DeliveryInfo(Iso18626Model):
    date_sent: DateTime
    item_id: str | None = None
    sent_via: str | None = None
    url: str | None = Field(None, alias="URL")
    delivery_method: str | None = None
    address: Address | None = None
    sent_to_patron: bool | None = None
    loan_condition: str | None = None
    delivered_format: str | None = None
    item_format: str | None = None
    service_type: ServiceType | None = None
    delivery_costs: Costs | None = None
    payment_method: str | None = None

    @model_validator(mode="after")
    def _one_delivery_method(self) -> DeliveryInfo:
        given = {(v or "").strip().upper() for v in (self.sent_via, self.delivery_method)}
        given.discard("")
        if len(given) > 1:
            raise _element_error(
                "deliveryMethod", ErrorType.UNRECOGNISED_DATA_VALUE,
                f"{self.delivery_method!r} contradicts sentVia {self.sent_via!r} (the same "
                "element in ISO 18626 1.2 and 2021: send one of them)")
        return self

    @property
    def method(self) -> str | None:
        """How the item was sent: 1.2's `sentVia` or 2021's `deliveryMethod`, whichever
        came (they may not disagree), without surrounding blanks; None if neither."""
        for value in (self.sent_via, self.delivery_method):
            if value and value.strip():
                return value.strip()
        return None


class ShippingInfo(Iso18626Model):
    """`shippingInfo` (2021 revision)."""

    courier_name: str | None = None
    tracking_id: list[str] | None = None
    insurance: YesNo | None = None
    insurance_third_party: YesNo | None = None
    third_party_name: str | None = None
    insurance_costs: list[Costs] | None = None


class ReturnInfo(Iso18626Model):
    return_agency_id: AgencyId | None = None
    name: str | None = None
    physical_address: PhysicalAddress | None = None


# --------------------------------------------------------------------------
# The six messages
# --------------------------------------------------------------------------


class Request(Iso18626Model):
    header: Header
    bibliographic_info: BibliographicInfo
    publication_info: PublicationInfo | None = None
    service_info: ServiceInfo | None = None
    supplier_info: list[SupplierInfo] | None = None
    requested_delivery_info: list[RequestedDeliveryInfo] | None = None
    requesting_agency_info: RequestingAgencyInfo | None = None
    patron_info: PatronInfo | None = None
    billing_info: BillingInfo | None = None
    hub_extensions: HubExtensions | None = None


class RequestConfirmation(Iso18626Model):
    confirmation_header: ConfirmationHeader
    error_data: ErrorData | None = None


class SupplyingAgencyMessage(Iso18626Model):
    header: MessageHeader
    message_info: MessageInfo
    status_info: StatusInfo | None = Field(
        None, description="Required, with its status and lastChange, unless "
                          "messageInfo.reasonForMessage is Notification (ARCHITECTURE §3.4)")
    retry_info: RetryInfo | None = None
    delivery_info: DeliveryInfo | None = None
    shipping_info: ShippingInfo | None = None
    return_info: ReturnInfo | None = None

    @model_validator(mode="after")
    def _status_unless_notification(self) -> SupplyingAgencyMessage:
        """A Notification carries a note and changes no status, and a CancelResponse's
        answer says what happened, so either may leave the status out (ARCHITECTURE
        §3.4); any other message reports one."""
        if self.is_notification or self.answers_cancel:
            return self
        info = self.status_info
        if info is None:
            raise _element_error("statusInfo", ErrorType.BADLY_FORMED_MESSAGE,
                                 "required element missing")
        if info.status is None:
            raise _element_error(
                "statusInfo.status", ErrorType.BADLY_FORMED_MESSAGE,
                "required element missing (only a message whose reasonForMessage is "
                "Notification, or a CancelResponse with its answerYesNo, may leave it empty)")
        if info.last_change is None:
            raise _element_error("statusInfo.lastChange", ErrorType.BADLY_FORMED_MESSAGE,
                                 "required element missing")
        return self

    @property
    def is_notification(self) -> bool:
        """reasonForMessage Notification: a note, never a change of status."""
        return self.message_info.reason_for_message == ReasonForMessage.NOTIFICATION

    @property
    def answers_cancel(self) -> bool:
        """reasonForMessage CancelResponse with its answerYesNo."""
        return self.message_info.reason_for_message == ReasonForMessage.CANCEL_RESPONSE \
            and self.message_info.answer_yes_no is not None

    @property
    def status(self) -> Status | None:
        """The status the supplier reports. Left out, a CancelResponse's Y means
        Cancelled; None only in a Notification or a declined (N) CancelResponse, which
        change nothing."""
        if self.status_info is not None and self.status_info.status is not None:
            return self.status_info.status
        if self.answers_cancel and self.message_info.answer_yes_no == YesNo.Y:
            return Status.CANCELLED
        return None

    @property
    def charged_costs(self) -> Costs | None:
        """What the supplier charges in this message: `deliveryInfo.deliveryCosts`.

        `messageInfo.offeredCosts` is, by the standard, an offer for the requester to
        accept (a retry's price, a condition; 2021 moved it into retryInfo), never the
        charge. A system that bills there (Alma) has its peer profile copy it into
        deliveryCosts at the edge (broker/profiles), before the message gets here.
        """
        return self.delivery_info.delivery_costs if self.delivery_info else None


class SupplyingAgencyMessageConfirmation(Iso18626Model):
    confirmation_header: ConfirmationHeader
    reason_for_message: ReasonForMessage | None = None
    error_data: ErrorData | None = None


class RequestingAgencyMessage(Iso18626Model):
    header: MessageHeader
    action: Action
    note: str | None = None


class RequestingAgencyMessageConfirmation(Iso18626Model):
    confirmation_header: ConfirmationHeader
    action: Action | None = None
    error_data: ErrorData | None = None


MESSAGE_MODELS: dict[MessageType, type[BaseModel]] = {
    MessageType.REQUEST: Request,
    MessageType.REQUEST_CONFIRMATION: RequestConfirmation,
    MessageType.SUPPLYING_AGENCY_MESSAGE: SupplyingAgencyMessage,
    MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION: SupplyingAgencyMessageConfirmation,
    MessageType.REQUESTING_AGENCY_MESSAGE: RequestingAgencyMessage,
    MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION: RequestingAgencyMessageConfirmation,
}

CONFIRMATION_OF: dict[MessageType, MessageType] = {
    MessageType.REQUEST: MessageType.REQUEST_CONFIRMATION,
    MessageType.SUPPLYING_AGENCY_MESSAGE: MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION,
    MessageType.REQUESTING_AGENCY_MESSAGE: MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION,
}

# --------------------------------------------------------------------------
# Parsing, with ISO 18626 error reporting
# --------------------------------------------------------------------------


def parse_message(body: Any) -> tuple[MessageType, BaseModel]:
    """Validate a whole message body `{messageType: {...}}`; MessageError if unacceptable."""
    if not isinstance(body, dict):
        got = "an array" if isinstance(body, list) else f"a JSON {json_kind(body)}"
        raise MessageError(ErrorType.BADLY_FORMED_MESSAGE,
                           "the message body must be a JSON object with one key, the message "
                           f"type; got {got}")
    if len(body) != 1:
        keys = ", ".join(repr(k) for k in sorted(map(str, body)))
        raise MessageError(ErrorType.BADLY_FORMED_MESSAGE,
                           "the message body must have exactly one top-level key, the message "
                           f"type; got {f'{len(body)}: {keys}' if body else 'none'}")
    key, inner = next(iter(body.items()))
    try:
        kind = MessageType(key)
    except ValueError:
        raise MessageError(ErrorType.UNRECOGNISED_DATA_ELEMENT,
                           f"{show(key)} is not an ISO 18626 message type; expected one of "
                           f"{MESSAGE_TYPES}") from None
    if not isinstance(inner, dict):
        raise MessageError(ErrorType.BADLY_FORMED_MESSAGE,
                           f"{kind}: the message must be a JSON object, not {show(inner)}")
    try:
        # Wire names only: a snake_case key is an unknown element, kept as such.
        model = MESSAGE_MODELS[kind].model_validate(inner, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise explain(str(kind), exc.errors(include_url=False)[0]) from None
    return kind, model


def dump_message(kind: MessageType, model: BaseModel) -> dict[str, Any]:
    """The wire body `{kind: {...}}` of a message model."""
    return {str(kind): model.model_dump(by_alias=True, exclude_none=True, mode="json")}


# --------------------------------------------------------------------------
# Confirmations
# --------------------------------------------------------------------------

# What a confirmation header echoes from the header of the message it confirms.
_ECHO: dict[str, TypeAdapter[Any]] = {
    "supplying_agency_id": TypeAdapter(AgencyId),
    "requesting_agency_id": TypeAdapter(AgencyId),
    "requesting_agency_request_id": TypeAdapter(str),
    "multiple_item_request_id": TypeAdapter(str),
    "timestamp": TypeAdapter(DateTime),
}


def _echoed(header: Any) -> dict[str, Any]:
    """The echoable fields of a header; a raw dict is salvaged field by field."""
    if isinstance(header, Header):
        return {name: getattr(header, name) for name in _ECHO}
    if isinstance(header, Mapping):
        found: dict[str, Any] = {}
        for name, adapter in _ECHO.items():
            raw = header.get(to_camel(name))
            if raw is None:
                continue
            try:
                found[name] = adapter.validate_python(raw)
            except ValidationError:
                continue  # garbled: simply not echoed
        return found
    return {}


def confirmation(kind: MessageType, header: Header | Mapping[str, Any] | None, *, ok: bool,
                 error_type: ErrorType | str | None = None, error_value: str | None = None,
                 timestamp_received: datetime | None = None, action: Action | None = None,
                 reason_for_message: ReasonForMessage | None = None,
                 ) -> tuple[MessageType, BaseModel]:
    """The confirmation answering an inbound message of `kind`.

    `header` is the inbound header when there is one (a model, or the raw wire
    dict of a message that failed validation); its ids and timestamp are echoed.
    `timestamp_received` defaults to now.
    """
    kind = MessageType(kind)
    if kind not in CONFIRMATION_OF:
        raise ValueError(f"{kind} is itself a confirmation; confirmations are not confirmed")
    if ok and error_type is not None:
        raise ValueError("an OK confirmation carries no errorData")
    if not ok and error_type is None:
        raise ValueError("an ERROR confirmation needs an error_type")
    if action is not None and kind is not MessageType.REQUESTING_AGENCY_MESSAGE:
        raise ValueError("action belongs only in a requestingAgencyMessageConfirmation")
    if reason_for_message is not None and kind is not MessageType.SUPPLYING_AGENCY_MESSAGE:
        raise ValueError("reasonForMessage belongs only in a "
                         "supplyingAgencyMessageConfirmation")
    now = datetime.now(UTC)
    echoed = _echoed(header)
    conf_header = ConfirmationHeader(
        supplying_agency_id=echoed.get("supplying_agency_id"),
        requesting_agency_id=echoed.get("requesting_agency_id"),
        timestamp=echoed.get("timestamp") or now,
        requesting_agency_request_id=echoed.get("requesting_agency_request_id"),
        multiple_item_request_id=echoed.get("multiple_item_request_id"),
        timestamp_received=timestamp_received or now,
        message_status=MessageStatus.OK if ok else MessageStatus.ERROR,
    )
    # error_type is None exactly when ok (both other cases were refused above).
    error_data = None if error_type is None else ErrorData(error_type=ErrorType(error_type),
                                                           error_value=error_value)
    answer = CONFIRMATION_OF[kind]
    model: BaseModel
    if answer is MessageType.REQUEST_CONFIRMATION:
        model = RequestConfirmation(confirmation_header=conf_header, error_data=error_data)
    elif answer is MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION:
        model = SupplyingAgencyMessageConfirmation(
            confirmation_header=conf_header, reason_for_message=reason_for_message,
            error_data=error_data)
    else:
        model = RequestingAgencyMessageConfirmation(
            confirmation_header=conf_header, action=action, error_data=error_data)
    return answer, model
