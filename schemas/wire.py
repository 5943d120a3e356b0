"""The wire contract's names (ARCHITECTURE §3.2): what agencies publish to and read from.

Public API: agencies' systems are written against these names (with the deployment's
prefix, see Settings.name). infra/topology.py declares them.
"""

from __future__ import annotations

INBOUND = "ill.inbound"  # topic exchange; every agency publishes here, routing key = type
OUTBOUND = "ill.outbound"  # direct exchange; hub -> agency, routing key = agency symbol
FINANCE = "ill.finance"  # topic exchange; settlement runs and statements
EVENTS = "ill.events"  # topic exchange; domain events for dashboards and integrations
DEAD = "ill.dead"  # fanout exchange; poison messages, with the reason in headers
HUB_INBOUND = "hub.inbound"  # the hub's intake (cut into shards, see broker/shards.py)
HUB_DEAD = "hub.dead"  # the queue of dead letters


def agency_queue(symbol: str) -> str:
    """The queue an agency reads: `agency.<symbol>`."""
    return f"agency.{symbol}"
