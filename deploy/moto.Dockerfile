# An S3 server for the celery-s3 profile of docker-compose.airflow.yml where no object storage
# is at hand: moto in server mode (moto[server], the version pinned in constraints.txt) on the
# local Debian image, with wheels built on the host like the Airflow image's (no container
# registry, no PyPI from the build). It keeps its objects in memory: they are gone when the
# container stops. Production stores belong on a real S3 (or GCS) service; the compose file only
# needs its URL and its Airflow connection.
#
#   scripts/build-compose-images --debian     (builds the wheels, then this image)
#
# s3-seed creates the bucket and copies a local source cache into it (the one-shot `s3-init`).
ARG BASE_IMAGE=airflow-butido/debian:bookworm
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 50000 --gid 0 --create-home moto && python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
COPY wheels /tmp/wheels
RUN pip install --no-index --find-links /tmp/wheels -c /tmp/wheels/constraints.txt \
      -r /tmp/wheels/requirements.txt \
 && rm -rf /tmp/wheels
COPY s3-seed /usr/local/bin/s3-seed
USER moto
EXPOSE 5000
HEALTHCHECK --interval=3s --retries=20 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:5000/')"]
CMD ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
