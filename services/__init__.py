"""pdo: the public-data operations platform (services side by side over a small shared core)."""
