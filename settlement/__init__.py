"""Fees, subsidies, the ledger and periodic netting runs."""
