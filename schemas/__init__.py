"""The contracts: ISO 18626 message models (JSON form), settings, SQL migrations."""
