"""The local stack for development and tests: the Kafka broker launcher."""
