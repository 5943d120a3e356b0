"""Asking a supplier's own catalogue before routing (issue 18): an SRU searchRetrieve
for the item's identifiers, availability read from the record (MARC items or ISO 20775
holdings), within a time budget, behind a cache and a circuit breaker per catalogue.

config.py    what a supplier's catalogue is (a row of supplier_catalogue), validated
store.py     that row written, read and removed (`run.py agency catalogue`)
cql.py       the CQL query for the identifiers, each term quoted
records.py   the SRU response and the availability in its records
breaker.py   the circuit breaker of one catalogue
checker.py   Catalogues: the HTTP session, cache and breakers; `check` under a budget
"""
