"""Outbound ISO 18626 over HTTP: what the hub sends to an agency that is an HTTP peer.

An agency registered with `--iso18626-url` gets, instead of messages on its AMQP
queue, the same messages POSTed to that URL as `ISO18626Message` XML in its schema
version. The rows come from the same transactional outbox (a trigger marks rows
for such agencies `transport = 'iso18626-http'` as they are written; the AMQP relay
leaves them alone), so a state change and its message still commit together.

Per peer, strictly in outbox order: a peer that is down (connection refused,
timeout, HTTP error, an answer that is not an ISO 18626 confirmation) holds up only
its own messages, retried with exponential backoff (2, 4, ... up to 300 s). The
peer's confirmation is recorded on the row. A peer that answers ERROR has received
and refused the message: retrying would only be refused again, so the row is
closed, a `peer_error` flag raised and a dead letter kept for the operators.

Each row is written as the peer's profile wants it (broker/profiles/, the outbound
adjustments; the row keeps the hub's own form). A row the profile says not to send at
all (an ExpectToSupply to Alma) is closed with `peer_status` SKIPPED and the reason in
`peer_answer`. For a profile that numbers notes (ReShare's `#seq:N#`), the last number
sent per transaction is kept in `peer_note_sequence` and counts only confirmed rows.

An https:// peer's certificate and host name are always verified: against the system's
CAs and ILLHUB_HTTP__PEERS_CA_FILE, or, for an agency registered with a CA of its own
(`run.py agency set SYMBOL --iso18626-ca FILE`), against that CA as well. A certificate
that cannot be verified is retried like a peer that is down (the row says why) and
raises a `peer_error` flag, since only an operator can fix it; nothing is ever sent
unverified.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl as _ssl
from collections import defaultdict
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from broker import profiles
from infra.database import Connection
from infra.flags import FlagKind, raise_flag
from infra.locks import Lock, try_transaction_lock
from infra.observability import MESSAGES_OUT
from infra.relay import MAX_BACKOFF_SECONDS
from infra.tls import TlsSettingError, peers_context, pem_client_context
from schemas.iso18626 import CONFIRMATION_OF
from schemas.iso18626_codes import MessageType
from schemas.iso18626_xml import XmlMessageError, read_xml, to_xml
from schemas.settings import Settings, env_name

log = logging.getLogger(__name__)

# Raised by the outbox's transport trigger (migration 0011) for rows to HTTP peers only.
PEER_NOTIFY_CHANNEL = "illhub_peers"

TRANSPORT = "iso18626-http"

_PENDING = """
SELECT o.id, o.routing_key, o.message_id, o.message_type, o.headers, o.body, o.attempts,
       o.available_at <= now() AS due, a.iso18626_url, a.iso18626_version,
       a.iso18626_profile, a.iso18626_ca
FROM (SELECT *, row_number() OVER (PARTITION BY routing_key ORDER BY id) AS n
      FROM outbox WHERE published_at IS NULL AND transport = 'iso18626-http') o
JOIN agency a ON a.symbol = o.routing_key
WHERE o.n <= $1
ORDER BY o.routing_key, o.id
"""


class Sent:
    """A row the peer confirmed OK."""

    def __init__(self, answer: str, seq: int | None = None) -> None:
        self.answer = answer
        self.seq = seq  # the `#seq:N#` its note carried (profiles that number notes)


class Skipped:
    """A row the peer's profile says not to send (an ExpectToSupply to Alma): closed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Refused:
    """A row that must not be sent again: the peer answered ERROR, or it cannot be written."""

    def __init__(self, reason: str, answer: str | None = None) -> None:
        self.reason = reason
        self.answer = answer


class Retry:
    """The peer did not confirm receipt: try again later."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Untrusted(Retry):
    """The peer's TLS certificate could not be verified: retried (the fix may be a CA
    the operators add, or the peer's renewed certificate), and flagged."""


Result = Sent | Skipped | Refused | Retry

# The last `#seq:N#` sent to each peer, per transaction (profiles that number notes).
_SEQUENCES = """
SELECT transaction_id, last_seq FROM peer_note_sequence
WHERE agency = $1 AND transaction_id = ANY($2::text[])"""
_SEQUENCE_SENT = """
INSERT INTO peer_note_sequence (agency, transaction_id, last_seq) VALUES ($1, $2, $3)
ON CONFLICT (agency, transaction_id) DO UPDATE SET last_seq = EXCLUDED.last_seq"""


class PeerRelay:
    def __init__(self, pool: asyncpg.Pool, settings: Settings, *, timeout: float = 30.0,
                 per_peer: int = 50, ssl: _ssl.SSLContext | None = None) -> None:
        """`ssl`: what https:// peers are verified with (default: built from settings,
        `infra.tls.peers_context`); a peer with its own CA gets a context of its own."""
        self.pool = pool
        self.settings = settings
        self.timeout = timeout
        self.per_peer = per_peer
        self.ssl = ssl if ssl is not None else peers_context(settings)
        # Per peer CA (its PEM): building a context parses the PEM, so once per CA.
        self._own_ca: dict[str, _ssl.SSLContext] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Send until stop(); a failure (database restarted, say) costs a pause only."""
        while not self._stopping:
            try:
                await self._listen_and_send()
            except Exception:
                log.exception("ISO 18626 peer relay failed; starting again in 1 s")
                await asyncio.sleep(1.0)

    async def _listen_and_send(self) -> None:
        listener = await asyncpg.connect(self.settings.database_url)
        self._session = self._new_session()
        try:
            await listener.add_listener(PEER_NOTIFY_CHANNEL, lambda *_: self._wake.set())
            while not self._stopping:
                if listener.is_closed():
                    raise ConnectionError("the peer relay's LISTEN session was closed")
                if await self.send_due() == 0:
                    self._wake.clear()
                    try:
                        # New rows wake it at once; polling is for retries after
                        # backoff, whose granularity is a second anyway.
                        await asyncio.wait_for(self._wake.wait(),
                                               max(1.0, self.settings.outbox.poll_seconds))
                    except TimeoutError:
                        pass
        finally:
            await self._session.close()
            self._session = None
            listener.terminate()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                     connector=aiohttp.TCPConnector(ssl=self.ssl))

    def _context_for(self, row: asyncpg.Record) -> _ssl.SSLContext:
        """What the row's peer is verified with: its own CA (besides the system's), if
        its agency has one; otherwise the relay's."""
        pem = row["iso18626_ca"]
        if not pem:
            return self.ssl
        context = self._own_ca.get(pem)
        if context is None:
            context = pem_client_context(pem, f"the ISO 18626 CA of {row['routing_key']}")
            self._own_ca[pem] = context
        return context

    async def send_due(self) -> int:
        """One round: each peer's due messages in order until one fails; returns how many
        rows were settled (confirmed or refused)."""
        own_session = self._session is None
        session = self._session or self._new_session()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                if not await try_transaction_lock(conn, Lock.PEER_RELAY):
                    return 0
                # An agency that went back to AMQP gets what is still pending on its queue.
                await conn.execute(
                    """UPDATE outbox SET transport = 'amqp'
                       WHERE published_at IS NULL AND transport = 'iso18626-http'
                         AND routing_key IN (SELECT symbol FROM agency
                                             WHERE iso18626_url IS NULL)""")
                rows = await conn.fetch(_PENDING, self.per_peer)
                peers: dict[str, list[asyncpg.Record]] = defaultdict(list)
                for row in rows:
                    peers[row["routing_key"]].append(row)
                due = [queue for queue in peers.values() if queue[0]["due"]]
                numbers = [await _sequences(conn, q) for q in due]
                results = await asyncio.gather(*(self._send_queue(session, q, n)
                                                 for q, n in zip(due, numbers, strict=True)))
                settled = 0
                for queue, outcomes in zip(due, results, strict=True):
                    for row, result in zip(queue, outcomes, strict=False):
                        await self._record(conn, row, result)
                        settled += not isinstance(result, Retry)
                return settled
        finally:
            if own_session:
                await session.close()

    async def _send_queue(self, session: aiohttp.ClientSession, queue: list[asyncpg.Record],
                          numbers: dict[str, int] | None) -> list[Result]:
        """A peer's rows in order; `numbers` the last note number per transaction (None:
        its profile does not number notes)."""
        results: list[Result] = []
        for row in queue:
            transaction = _transaction_of(row)
            seq = numbers.get(transaction, 0) + 1 \
                if numbers is not None and transaction is not None else None
            try:
                result = await self._send(session, row, seq)
                if isinstance(result, Sent) and result.seq is not None and \
                        numbers is not None and transaction is not None:
                    numbers[transaction] = result.seq
            except Exception as exc:  # one peer's surprise must not stop the others
                log.exception("sending %s to ISO 18626 peer %s failed", row["message_id"],
                              row["routing_key"])
                result = Retry(f"{type(exc).__name__}: {exc}")
            results.append(result)
            if isinstance(result, Retry):
                break  # order: nothing after it goes before it
        return results

    async def _send(self, session: aiohttp.ClientSession, row: asyncpg.Record,
                    seq: int | None = None) -> Result:
        body = json.loads(bytes(row["body"]))
        version = row["iso18626_version"]
        adjusted = profiles.outbound(row["iso18626_profile"], body, seq=seq)
        if adjusted.changed:
            log.info("to %s (profile %s): %s", row["routing_key"], row["iso18626_profile"],
                     "; ".join(f"{a.adjustment}: {a.detail}" for a in adjusted.applied))
        if adjusted.drop is not None:
            return Skipped(f"not sent: {adjusted.drop} (profile {row['iso18626_profile']}, "
                           f"{adjusted.applied[-1].adjustment})")
        body = adjusted.body
        try:
            out = to_xml(body, version)
        except (XmlMessageError, ValueError) as exc:
            return Refused(f"cannot be written as ISO 18626 {version} XML: {exc}")
        if out.dropped:
            log.info("to %s as ISO 18626 %s: no element for %s (not sent)",
                     row["routing_key"], version, ", ".join(out.dropped))
        headers = {"Content-Type": "application/xml; charset=utf-8",
                   "X-ILLHub-Message-Id": row["message_id"]}
        try:
            context = self._context_for(row)
        except TlsSettingError as exc:  # the migration's CHECK lets a broken PEM through
            return Untrusted(f"cannot verify {_masked(row['iso18626_url'])}: {exc}; set "
                             f"it again with run.py agency set {row['routing_key']} "
                             "--iso18626-ca FILE")
        try:
            async with session.post(row["iso18626_url"], data=out.data, headers=headers,
                                    ssl=context) as response:
                answer = await response.read()
                if response.status // 100 != 2:
                    return Retry(f"HTTP {response.status} from {_masked(row['iso18626_url'])}: "
                                 f"{answer[:200].decode('utf-8', 'replace')}")
        except aiohttp.ClientConnectorCertificateError as exc:
            return Untrusted(_untrusted(row, exc))
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            return Retry(f"{type(exc).__name__} posting to {_masked(row['iso18626_url'])}: "
                         f"{exc}")
        result = _judge(row, answer)
        if isinstance(result, Sent) and adjusted.seq_used:
            result.seq = seq
        return result

    async def _record(self, conn: Connection, row: asyncpg.Record,
                      result: Result) -> None:
        if isinstance(result, Sent):
            MESSAGES_OUT.labels(TRANSPORT, row["message_type"] or "-").inc()
            await conn.execute(
                """UPDATE outbox SET published_at = now(), attempts = attempts + 1,
                          last_error = NULL, peer_status = 'OK', peer_answer = $2
                   WHERE id = $1""", row["id"], result.answer)
            transaction = _transaction_of(row)
            if result.seq is not None and transaction is not None:
                await conn.execute(_SEQUENCE_SENT, row["routing_key"], transaction, result.seq)
            return
        if isinstance(result, Skipped):
            log.info("not sent to ISO 18626 peer %s: %s %s", row["routing_key"],
                     row["message_id"], result.reason)
            await conn.execute(
                """UPDATE outbox SET published_at = now(), last_error = NULL,
                          peer_status = 'SKIPPED', peer_answer = $2
                   WHERE id = $1""", row["id"], result.reason)
            return
        if isinstance(result, Untrusted):
            # Once per message: a peer stuck on one message is not flagged every round.
            await raise_flag(conn, FlagKind.PEER_ERROR, row["routing_key"],
                             f"{row['routing_key']}: {row['message_type']} "
                             f"{row['message_id']} not sent: {result.reason}",
                             key=f"certificate:{row['message_id']}",
                             transaction_id=_transaction_of(row))
        if isinstance(result, Retry):
            delay = min(MAX_BACKOFF_SECONDS, 2 ** min(row["attempts"], 12))
            log.warning("to ISO 18626 peer %s: %s (%s); retry in %ss", row["routing_key"],
                        row["message_id"], result.reason, delay)
            await conn.execute(
                """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                          available_at = now() + make_interval(secs => $3)
                   WHERE id = $1""", row["id"], result.reason, float(delay))
            return
        log.warning("ISO 18626 peer %s refused %s: %s", row["routing_key"], row["message_id"],
                    result.reason)
        await conn.execute(
            """UPDATE outbox SET published_at = now(), attempts = attempts + 1,
                      last_error = $2, peer_status = 'ERROR', peer_answer = $3
               WHERE id = $1""", row["id"], result.reason, result.answer)
        headers = json.loads(row["headers"]) if row["headers"] else {}
        transaction_id = headers.get("hub-transaction-id")
        await raise_flag(conn, FlagKind.PEER_ERROR, row["routing_key"],
                         f"{row['routing_key']} refused {row['message_type']} "
                         f"{row['message_id']}: {result.reason}",
                         key=row["message_id"], transaction_id=transaction_id)
        # Not a delivery the hub received, so no sender: `dead replay` cannot mistake it
        # for one; the properties say which way it went.
        await conn.execute(
            """INSERT INTO dead_letter (sender, message_id, routing_key, reason, properties,
                                        body)
               VALUES (NULL, $1, $2, $3, $4::jsonb, $5)""",
            row["message_id"], row["routing_key"],
            f"ISO 18626 peer {row['routing_key']} refused it: {result.reason}",
            json.dumps({"direction": "outbound", "transport": TRANSPORT,
                        "type": row["message_type"], "outbox_id": row["id"],
                        "url": _masked(row["iso18626_url"]), "headers": headers,
                        "peer_answer": result.answer}, ensure_ascii=False),
            bytes(row["body"]))


def _transaction_of(row: asyncpg.Record) -> str | None:
    headers = json.loads(row["headers"]) if row["headers"] else {}
    transaction = headers.get("hub-transaction-id") if isinstance(headers, dict) else None
    return transaction if isinstance(transaction, str) else None


async def _sequences(conn: Connection, queue: list[asyncpg.Record]) -> dict[str, int] | None:
    """The last note number sent per transaction of the queue's rows, when the peer's
    profile numbers its notes (ReShare); None otherwise."""
    if not profiles.numbers_notes(queue[0]["iso18626_profile"]):
        return None
    transactions = sorted({t for row in queue if (t := _transaction_of(row)) is not None})
    rows = await conn.fetch(_SEQUENCES, queue[0]["routing_key"], transactions)
    return {r["transaction_id"]: r["last_seq"] for r in rows}


def _judge(row: asyncpg.Record, answer: bytes) -> Result:
    """What the peer's answer means for the row."""
    text = answer.decode("utf-8", "replace")
    try:
        message = read_xml(answer)
    except XmlMessageError as exc:
        return Retry(f"answer is not an ISO 18626 confirmation ({exc.error_value}): "
                     f"{text[:200]}")
    sent = MessageType(row["message_type"]) if row["message_type"] in set(MessageType) \
        else None
    expected = CONFIRMATION_OF.get(sent) if sent else None
    if expected is not None and message.kind is not expected:
        return Retry(f"answer is a {message.kind}, not a {expected}")
    header = message.content.get("confirmationHeader") or {}
    if header.get("messageStatus") == "OK":
        return Sent(text)
    errors = message.content.get("errorData") or {}
    first = errors[0] if isinstance(errors, list) and errors else errors
    detail = f"{first.get('errorType', '?')}: {first.get('errorValue', '')}" \
        if isinstance(first, dict) else "ERROR without errorData"
    return Refused(f"peer answered ERROR: {detail}", text)


def _untrusted(row: asyncpg.Record, exc: aiohttp.ClientConnectorCertificateError) -> str:
    """Why a peer's certificate failed, and where the CA that would verify it goes."""
    cause = exc.certificate_error
    detail = getattr(cause, "verify_message", None) or str(cause)
    setting = env_name("http", "peers_ca_file")
    own = "its own CA" if row["iso18626_ca"] else f"the system's CAs and {setting}"
    return (f"the TLS certificate of {_masked(row['iso18626_url'])} could not be verified "
            f"({detail}) against {own}; if its CA is to be trusted: run.py agency set "
            f"{row['routing_key']} --iso18626-ca FILE, or add it to {setting}")


def _masked(url: str) -> str:
    """A peer URL fit for logs: any user:password in it removed."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
