"""Metering: usage facts into the ledger exactly once, usage windows, quotas, statements, reconciliation."""
