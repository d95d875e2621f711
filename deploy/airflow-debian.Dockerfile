# Airflow 3.3 with airflow-butido on plain Debian: the image of docker-compose.airflow.yml where
# no container registry is reachable (the official image needs one): Debian's Python and
# packages on the locally built Debian image, and wheels from PyPI built on the host:
#
#   scripts/build-compose-images --debian     (builds the wheels on the host, then this image)
#
# It behaves like the official image where docker-compose.airflow.yml relies on it: `airflow` is
# the entrypoint (`command: scheduler`), AIRFLOW_HOME is /opt/airflow, the user `airflow` has uid
# 50000 and group 0, and any uid with group 0 may run it (AIRFLOW_UID). The Celery provider is
# installed too, for the `celery` profile.
ARG BASE_IMAGE=airflow-butido/debian:bookworm
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
# git: the repository's commit is recorded with every submit; curl: the api-server healthcheck;
# tini: reaps the processes Airflow's supervisors leave behind
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates curl git tini \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --uid 50000 --gid 0 --home-dir /home/airflow --create-home airflow \
 && python3 -m venv /opt/venv \
 && mkdir -p /opt/airflow/dags /opt/airflow/logs \
 && chown -R airflow:0 /opt/airflow /opt/venv /home/airflow \
 && chmod -R g+rwX /opt/airflow /home/airflow
ENV PATH=/opt/venv/bin:$PATH AIRFLOW_HOME=/opt/airflow PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
USER airflow
# The wheels come from the host (scripts/build-compose-images runs `pip wheel -c constraints.txt`
# there): the build needs no network for Python packages, and no CA of the host's. The
# dependencies first, in a layer of their own, rebuilt only when they change.
COPY --chown=airflow:0 build/compose-wheels/deps /tmp/wheels/deps
RUN pip install --no-index --find-links /tmp/wheels/deps -c /tmp/wheels/deps/constraints.txt \
      -r /tmp/wheels/deps/requirements.txt
COPY --chown=airflow:0 build/compose-wheels/project /tmp/wheels/project
RUN pip install --no-index --no-deps /tmp/wheels/project/*.whl

COPY --chown=airflow:0 dags/butido_build.py /opt/airflow/dags/butido_build.py
WORKDIR /opt/airflow
ENTRYPOINT ["/usr/bin/tini", "--", "airflow"]
CMD ["version"]
