"""`pdo demo`: the whole platform at work on sample data, with a running summary."""
