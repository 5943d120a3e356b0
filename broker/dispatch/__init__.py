"""Dispatch: the hub as ISO 18626 broker between requesters and a rota of suppliers.

Everything here runs inside the intake's PostgreSQL transaction for one inbound
message (or the deadline sweeper's): the transaction row is locked `FOR UPDATE`,
state changes, audit rows and every outgoing message (outbox) commit together,
so two hub processes never advance one transaction at once and nothing is sent
for a change that did not commit.

The modules, by what they do (import each one by name; this package re-exports nothing):

- `dispatcher`: the intake handler, `Dispatcher`, routing each message by its kind;
- `requests`: a new request, its duplicate checks and its rota;
- `supplier`: supplyingAgencyMessage, with a delivery's charge and electronic copy;
- `requester`: requestingAgencyMessage;
- `deadlines`: the sweep of suppliers silent past their deadline;
- `rota`: forward, advance to the next supplier, finish Unfilled;
- `store`: the transaction row (`Txn`), state writes, rota entries, scorecard, audit log;
- `messages`: the ISO 18626 messages and domain events dispatch sends;
- `policies`: routing policy versions (load, read back, the cached one in force);
- `explain`: a transaction's path for operators;
- `desk`: what every step works with (settings, clock, time zone, policy store);
- `sql`: every SQL statement of the package.

The state model itself is `broker/states.py`.
"""
