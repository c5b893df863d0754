#!/usr/bin/env bash
# The test command: start the real Kafka broker and PostgreSQL (unless already up), run the whole
# suite, stop what this script started. Extra arguments go to pytest. Usage: deploy/test.sh [-k expr]
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

if ! .venv/bin/pdo broker status >/dev/null 2>&1; then
  .venv/bin/pdo broker start || exit 1
  started+=(broker)
fi
if ! deploy/local/postgres.sh status; then
  deploy/local/postgres.sh start || exit 1
  started+=(postgres)
fi

export PDO_TEST_POSTGRES_URL=${PDO_TEST_POSTGRES_URL:-$(deploy/local/postgres.sh url)}
export PDO_TEST_REQUIRE_ALL=1
.venv/bin/python -m pytest "$@"
