"""A library system's side of the wire contract, for ILL systems written in Python.

    from illclient.client import AgencyClient

Depends only on the contracts (schemas/): what a library's developer imports.
"""
