"""The read-only REST API for library systems and finance tools (issue 16): routes.py
(the handlers, mounted at /api/v1/ by `add_api_routes`), models.py (the response
bodies), openapi.py (the document built from them), problems.py (RFC 9457 errors),
queries.py (the reads, filtered by the caller's reach in SQL). docs/api.md explains it."""
