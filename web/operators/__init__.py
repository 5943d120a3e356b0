"""The operators' pages at /ops/: sign-in, dashboard, transaction and agency pages."""
