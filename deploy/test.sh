#!/usr/bin/env bash
# The test command: start the real Kafka broker (secured: SASL/SCRAM, ACLs, and a SASL_SSL listener with a
# development CA) and PostgreSQL unless already up, run the whole suite, stop what this script started.
# Extra arguments go to pytest. Usage: deploy/test.sh [-k expr]
set -uo pipefail
cd "$(dirname "$0")/.."

started=()
cleanup() {
  for service in "${started[@]}"; do
    case "$service" in
      broker) .venv/bin/pdo broker stop ;;
      postgres) deploy/local/postgres.sh stop ;;
    esac
  done
}
trap cleanup EXIT

# The TLS listener of the suite's broker: one integration test runs publish -> share -> consume over it.
tls_dir=${PDO_RUN_DIR:-$PWD/run}/tls
deploy/local/tls.sh "$tls_dir" >/dev/null || exit 1
export PDO_KAFKA_TLS_PORT=${PDO_KAFKA_TLS_PORT:-9094}
export PDO_KAFKA_TLS_CERTFILE=${PDO_KAFKA_TLS_CERTFILE:-$tls_dir/broker.pem}
export PDO_KAFKA_TLS_KEYFILE=${PDO_KAFKA_TLS_KEYFILE:-$tls_dir/broker-key.pem}
export PDO_KAFKA_SSL_CAFILE=${PDO_KAFKA_SSL_CAFILE:-$tls_dir/ca.pem}

if ! .venv/bin/pdo broker status >/dev/null 2>&1; then
  .venv/bin/pdo broker start || exit 1
  started+=(broker)
fi
if ! deploy/local/postgres.sh status; then
  deploy/local/postgres.sh start || exit 1
  started+=(postgres)
fi

export PDO_TEST_POSTGRES_URL=${PDO_TEST_POSTGRES_URL:-$(deploy/local/postgres.sh url)}
# tests/integration/test_cluster_faults.py (marker `cluster`, about 2-3 minutes) starts a three-node cluster of
# its own on these ports (+0, +10, +20 and one above each); deselect it with -m "not cluster".
export PDO_TEST_CLUSTER_PORT=${PDO_TEST_CLUSTER_PORT:-19700}
export PDO_TEST_REQUIRE_ALL=1
.venv/bin/python -m pytest "$@"
