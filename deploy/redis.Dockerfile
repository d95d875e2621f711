# Redis 7 from Debian's packages: the Celery broker of docker-compose.airflow.yml where the
# official `redis` image cannot be pulled (REDIS_IMAGE=airflow-butido/redis:7).
#
#   docker build -f deploy/redis.Dockerfile -t airflow-butido/redis:7 deploy
ARG BASE_IMAGE=airflow-butido/debian:bookworm
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/*
EXPOSE 6379
USER redis
CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
