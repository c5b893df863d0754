"""Sharing service: every published record delivered to each entitled tenant's stream, masked, with provenance.

It has no database: grants and datasets are kept in memory from pdo.authorizations and pdo.catalog."""
