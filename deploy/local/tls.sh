#!/usr/bin/env bash
# A development CA and a certificate for the local broker's SASL_SSL listener (127.0.0.1 and localhost).
# Usage: deploy/local/tls.sh DIR   -> DIR/ca.pem (give clients this: PDO_KAFKA_SSL_CAFILE),
#                                     DIR/broker.pem and DIR/broker-key.pem (PDO_KAFKA_TLS_CERTFILE/_KEYFILE).
# Idempotent: existing files are kept. For production, use certificates from your own CA.
set -euo pipefail
dir=${1:?usage: deploy/local/tls.sh DIR}
mkdir -p "$dir"
cd "$dir"
if [[ -f ca.pem && -f broker.pem && -f broker-key.pem ]]; then
  echo "TLS files already in $dir"
  exit 0
fi
umask 077
# Kafka's PEM keystore wants an unencrypted PKCS#8 key, which genpkey writes.
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days 825 -subj "/CN=pdo development CA" -out ca.pem
openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out broker-key.pem
openssl req -new -key broker-key.pem -subj "/CN=localhost" -out broker.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -sha256 -days 825 \
  -extfile broker.ext -out broker.pem 2>/dev/null
rm -f broker.csr broker.ext ca.srl
chmod 644 ca.pem broker.pem
echo "TLS files in $dir: ca.pem (clients), broker.pem + broker-key.pem (the broker)"
