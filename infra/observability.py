"""What operators' tools read: Prometheus metrics and JSON logs (web/health.py serves them).

Metrics are per hub process (scrape each one); the database-wide figures (outbox
lag, dead letters, downloads, queued mail) are read at scrape time so every process
reports the same values for them.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
MESSAGES_IN = Counter("illhub_messages_in", "Inbound messages processed, by type and outcome",
                      ["type", "outcome"], registry=REGISTRY)
MESSAGES_OUT = Counter("illhub_messages_out", "Messages published from the outbox",
                       ["exchange", "type"], registry=REGISTRY)
INTAKE_SECONDS = Histogram(
    "illhub_intake_seconds",
    "Time to process one inbound message, validation to commit (dispatch latency in the hub)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=REGISTRY)
OUTBOX_PENDING = Gauge("illhub_outbox_pending", "Outbox rows not yet published",
                       registry=REGISTRY)
OUTBOX_LAG = Gauge("illhub_outbox_lag_seconds", "Age of the oldest unpublished outbox row",
                   registry=REGISTRY)
DEAD_LETTERS = Gauge("illhub_dead_letters", "Dead letters not replayed", registry=REGISTRY)
DOWNLOADS = Gauge("illhub_downloads", "Downloads recorded by the gateway", registry=REGISTRY)
MAIL_QUEUED = Gauge("illhub_mail_queued", "E-mails waiting to be sent", registry=REGISTRY)

# The hub transaction a log line is about; set by dispatch, read by JsonFormatter.
transaction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "transaction_id", default=None)

class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the hub transaction id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        txn = transaction_id.get()
        if txn:
            entry["transaction"] = txn
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
