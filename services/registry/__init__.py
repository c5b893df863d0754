"""Schema registry: the Confluent Schema Registry REST API over pdo's SQL store."""
