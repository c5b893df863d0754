#!/usr/bin/env bash
# Install everything pdo needs on a fresh Debian machine: system packages, the Python venv, Kafka's jars.
# Idempotent: a second run only checks. Usage: deploy/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# prometheus: promtool checks and the Prometheus test; chromium: the console's headless browser test.
SYSTEM_PACKAGES=(openjdk-17-jre-headless maven postgresql python3-venv prometheus chromium)
PYTHON=${PDO_PYTHON:-python3.11}

step() { printf '\n== %s\n' "$*"; }

missing_packages() {
  for package in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || echo "$package"
  done
}

step "system packages: ${SYSTEM_PACKAGES[*]}"
mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "missing: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
else
  echo "all present"
fi

step "python venv .venv ($PYTHON)"
if ! command -v "$PYTHON" >/dev/null; then
  echo "$PYTHON not found: pdo needs Python 3.11 (set PDO_PYTHON to its path)" >&2
  exit 1
fi
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"
echo "installed: $(.venv/bin/python -m pip --version | cut -d' ' -f1-2), pdo $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("pdo"))')"

step "Kafka broker jars"
.venv/bin/pdo broker fetch

step "ready: start the platform with .venv/bin/pdo up, run the tests with deploy/test.sh"
