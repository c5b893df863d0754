#!/bin/bash
# Starts the official apache/kafka image secured as pdo's local broker is (services/stack/broker.py):
# SASL/SCRAM-SHA-512 on the client listeners, SASL/PLAIN on the controller listener, StandardAuthorizer,
# nothing allowed without an ACL. The admin's SCRAM credential goes into the storage when it is formatted
# (KIP-900). Passwords come from the environment (docker-compose.yml requires them); none is built in.
# docker-compose.yml runs three of these, kafka-1..3, each both broker and controller (a three-voter quorum):
#   NODE_ID                  this node's id, 1..3
#   CONTROLLER_QUORUM_VOTERS every voter, the same on each node: 1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
#   ADVERTISED_HOST          the node's name on the compose network (kafka-1)
#   HOST_PORT                the node's port published on the host (29092, 29192, 29292)
# Kafka's internal topics get the production replication of topics/internal/replication.yaml (3 / 2).
set -euo pipefail
: "${PDO_KAFKA_ADMIN_PASSWORD:?set PDO_KAFKA_ADMIN_PASSWORD}"
: "${PDO_KAFKA_CONTROLLER_PASSWORD:?set PDO_KAFKA_CONTROLLER_PASSWORD}"
kafka_home=${KAFKA_HOME:-/opt/kafka}
node_id=${NODE_ID:-1}
voters=${CONTROLLER_QUORUM_VOTERS:-1@localhost:9093}
advertised_host=${ADVERTISED_HOST:-kafka}
host_port=${HOST_PORT:-29092}
config=/tmp/pdo-server.properties
umask 077
scram="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"${PDO_KAFKA_ADMIN_PASSWORD}\";"
plain="org.apache.kafka.common.security.plain.PlainLoginModule required username=\"controller\" password=\"${PDO_KAFKA_CONTROLLER_PASSWORD}\" user_controller=\"${PDO_KAFKA_CONTROLLER_PASSWORD}\";"
cat >"$config" <<PROPERTIES
process.roles=broker,controller
node.id=${node_id}
controller.quorum.voters=${voters}
listeners=CLIENT://:9092,HOST://:${host_port},CONTROLLER://:9093
advertised.listeners=CLIENT://${advertised_host}:9092,HOST://localhost:${host_port}
listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,HOST:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=CLIENT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=${plain}
listener.name.client.scram-sha-512.sasl.jaas.config=${scram}
listener.name.host.scram-sha-512.sasl.jaas.config=${scram}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:controller
allow.everyone.if.no.acl.found=false
log.dirs=/var/lib/kafka/data
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.min.session.timeout.ms=2000
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
PROPERTIES
# For the healthcheck, and for an operator's kafka-*.sh tools: --command-config /tmp/pdo-admin.properties
cat >/tmp/pdo-admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=${scram}
PROPERTIES
if [[ ! -f /var/lib/kafka/data/meta.properties ]]; then
  "$kafka_home/bin/kafka-storage.sh" format -t "${CLUSTER_ID:-rFFtMb_1SUWfOsEy7Amq5w}" -c "$config" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=${PDO_KAFKA_ADMIN_PASSWORD}]"
fi
exec "$kafka_home/bin/kafka-server-start.sh" "$config"
