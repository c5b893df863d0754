"""pdo's tamper-evident audit log (issue #13)."""
