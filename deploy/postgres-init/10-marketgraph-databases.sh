#!/bin/sh
# Run once by the postgres image on an empty data directory (docker-entrypoint-initdb.d):
# one database per (market, role) store, owned by POSTGRES_USER.
set -eu
for db in ${MARKETGRAPH_DATABASES:-kg_auth kg_app us_auth us_app}; do
  echo "creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\""
done
