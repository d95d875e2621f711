# PostgreSQL 15 from Debian's packages, for docker-compose.airflow.yml where the official
# `postgres` image cannot be pulled (POSTGRES_IMAGE=airflow-butido/postgres:15). Same interface
# as the official image where the compose file relies on it: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB on first start, data in /var/lib/postgresql/data, `pg_isready` on the PATH.
#
#   docker build -f deploy/postgres.Dockerfile -t airflow-butido/postgres:15 deploy
ARG BASE_IMAGE=airflow-butido/debian:bookworm
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && pg_dropcluster 15 main \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint /usr/local/bin/postgres-entrypoint
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
