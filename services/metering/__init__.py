"""Metering: usage facts into the ledger exactly once, usage windows, quotas, its projection of grants and datasets."""
