"""Schema registry: the Confluent Schema Registry REST API (AVRO) over pdo's SQL store.

`app.create_app(database_url)` builds the FastAPI app; `store` holds the storage rules, `schemas` what makes
two schemas the same, `tables` the SQLAlchemy tables (migration 0001), `errors` Confluent's error codes.
"""
