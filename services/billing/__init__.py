"""Billing: statements and pricing per billing period, reconciliation of topics, ledger and statements, asset reports.

Reads metering's ledger, periods and projection only through pdo.metering.public; metering never imports billing."""
