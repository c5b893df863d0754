"""The shared core every pdo service stands on: settings, schemas, topics, codec, database."""
