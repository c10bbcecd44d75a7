#!/bin/bash
# the stand-in's kafka-run-class.sh: the upstream script's heap rule, the jars of /opt/kafka/libs
exec java ${KAFKA_HEAP_OPTS:--Xmx256M} -XX:+UseG1GC -Djava.awt.headless=true ${KAFKA_OPTS:-} \
  -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties \
  -cp "/opt/kafka/libs/*" "$@"
