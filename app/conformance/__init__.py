"""The ISO 18626 conformance kit's check (`run.py peer check`): it plays the other side
against a registered HTTP peer's real endpoint and judges what comes back.

    session.py       the check's own endpoint, POSTs to the peer, steps and exchanges
    judge.py         documents (XSD), confirmations, messages (ids, order, semantics)
    rules.py         the rules a verdict names
    as_supplier.py   the flows with the peer as supplier (the check requests)
    as_requester.py  the flows with the peer as requester (the check supplies)
    runner.py        one check from start to end, its exit code
    report.py        the printed steps, the summary, the report file

The other side of the kit, the scriptable peer, is sim/peer_mock.py. docs/conformance.md
describes both.
"""
