#!/usr/bin/env bash
# Run once by the postgres image after init.sql (docker-compose.yml mounts it as
# /docker-entrypoint-initdb.d/20-passwords.sh; the image sources *.sh files): each service
# role's password from its compose secret /run/secrets/postgres_<service>_password. The value
# goes through a psql variable (:'pw' quotes it), so any character works and none reaches a
# command line or a log.
set -euo pipefail
for service in recruitment groups mentoring evaluation; do
  file=/run/secrets/postgres_${service}_password
  if [[ ! -s $file ]]; then
    echo "passwords.sh: the secret $file is missing (python -m scripts.compose_init secrets)" >&2
    exit 1
  fi
  pw=$(tr -d '\r\n' < "$file")
  psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v role="$service" -v pw="$pw" <<'SQL'
ALTER ROLE :"role" PASSWORD :'pw';
SQL
done
unset pw
