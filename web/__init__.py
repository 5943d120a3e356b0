"""The hub's HTTP server: downloads, health, the operators' pages, ISO 18626 over HTTP."""
