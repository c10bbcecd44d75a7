#!/usr/bin/env bash
# The secured broker of docker-compose.yml (issue 12): the entrypoint of its `kafka` service.
#
# Why not the apache/kafka image's own /etc/kafka/docker/run: its configure step demands
# JKS-style keystore credential files for any SSL listener (KAFKA_SSL_KEY_CREDENTIALS, ...),
# which a PEM key store refuses, and its launch step formats the storage without `--add-scram`,
# so no SCRAM user could exist before the first start and nobody could log in to create one.
# This script does what those steps do with the distribution's own tools:
#   1. every KAFKA_* variable of the service becomes a property, with the image's naming rule
#      (KAFKA_FOO_BAR -> foo.bar, __ -> _, ___ -> -); the JVM's own variables are skipped;
#   2. the JAAS lines holding passwords are added from the compose secrets (/run/secrets), so no
#      password is in the compose file nor in the container's environment;
#   3. a fresh data volume is formatted with the SCRAM-SHA-512 credentials of `broker` (its own
#      inter-broker login) and `admin` (the init job kafka-setup creates the rest as admin);
#   4. an admin client config for the health check; then the broker replaces this shell.
set -euo pipefail
umask 077

dist=${TKM_KAFKA_DIST:-/opt/kafka}  # the image's Kafka distribution
secrets=${TKM_SECRETS_DIR:-/run/secrets}
conf=${TKM_KAFKA_CONF_DIR:-/tmp/tkm-kafka}  # container-private: it holds the JAAS passwords
mkdir -p "$conf"
props="$conf/server.properties"

secret() {
  local value
  value=$(tr -d '\r\n' < "$secrets/$1")
  if [[ ! $value =~ ^[A-Za-z0-9._~-]{16,256}$ ]]; then
    echo "secret $1: 16-256 characters of A-Z a-z 0-9 . _ ~ - (python -m scripts.compose_init secrets)" >&2
    exit 1
  fi
  printf '%s' "$value"
}
broker_pw=$(secret kafka_broker_password)
admin_pw=$(secret kafka_admin_password)
scram=org.apache.kafka.common.security.scram.ScramLoginModule
plain=org.apache.kafka.common.security.plain.PlainLoginModule

{
  while IFS='=' read -r name value; do
    case "$name" in
      KAFKA_OPTS|KAFKA_HEAP_OPTS|KAFKA_JMX_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_GC_LOG_OPTS|\
      KAFKA_LOG4J_OPTS|KAFKA_DEBUG|KAFKA_VERSION|KAFKA_HOME|KAFKA_URL) continue ;;
    esac
    key=${name#KAFKA_}
    key=${key,,}
    key=${key//___/-}
    key=${key//__/@}
    key=${key//_/.}
    key=${key//@/_}
    printf '%s=%s\n' "$key" "$value"
  done < <(env | grep -E '^KAFKA_[A-Z0-9_]+=' | sort)
  # INTERNAL is also the inter-broker listener: the broker logs in to it as `broker`
  printf 'listener.name.internal.scram-sha-512.sasl.jaas.config=%s required username="broker" password="%s";\n' "$scram" "$broker_pw"
  printf 'listener.name.external.scram-sha-512.sasl.jaas.config=%s required;\n' "$scram"
  # KRaft controllers cannot use SCRAM (its credentials live in the log they serve): PLAIN,
  # whose only user is the broker's static one
  printf 'listener.name.controller.plain.sasl.jaas.config=%s required username="broker" password="%s" user_broker="%s";\n' "$plain" "$broker_pw" "$broker_pw"
} > "$props"

log_dir=$(sed -n 's/^log\.dirs=//p' "$props")
if [[ ! -f "$log_dir/meta.properties" ]]; then
  "$dist/bin/kafka-storage.sh" format --cluster-id="$CLUSTER_ID" --config "$props" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$broker_pw]" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$admin_pw]"
fi

cat > "$conf/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$scram required username="admin" password="$admin_pw";
ssl.truststore.type=PEM
ssl.truststore.location=$(sed -n 's/^ssl\.truststore\.location=//p' "$props")
PROPS

unset broker_pw admin_pw
exec "$dist/bin/kafka-server-start.sh" "$props"
