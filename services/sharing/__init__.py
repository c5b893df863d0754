"""Sharing service: every published record delivered to each entitled tenant's stream, masked, with provenance."""
