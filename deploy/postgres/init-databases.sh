#!/bin/sh
# One database per service (each service owns its data).
set -e
for db in enrolment funding certificates notifications; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -c "CREATE DATABASE $db"
done
