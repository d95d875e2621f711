# Airflow 3.3 with airflow-butido installed: the image of docker-compose.airflow.yml.
#
#   scripts/build-compose-images          (or: docker build -t airflow-butido/airflow .)
#
# It needs the official image from a registry; where none is reachable,
# `scripts/build-compose-images --debian` builds deploy/airflow-debian.Dockerfile instead.
# The official Airflow image is the base; airflow-butido is installed with the pinned versions
# of constraints.txt (which pins the same Airflow), and dags/butido_build.py is placed in the
# dags folder. Build containers run on the Docker endpoints of the package repository's
# config.toml (in docker-compose.airflow.yml: the host's engine through its socket).
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

USER root
# git: the repository's commit is recorded with every submit (and may be a container env var)
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
USER airflow

WORKDIR /opt/airflow-butido
COPY --chown=airflow:0 pyproject.toml constraints.txt README* ./
COPY --chown=airflow:0 airflow_butido ./airflow_butido
RUN pip install --no-cache-dir -c constraints.txt ".[s3]"

COPY --chown=airflow:0 dags/butido_build.py /opt/airflow/dags/butido_build.py
WORKDIR /opt/airflow
