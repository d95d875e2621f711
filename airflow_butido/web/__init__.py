"""The build-record view: an Airflow plugin serving the build database inside the api-server.

:mod:`airflow_butido.web.plugin` is what Airflow loads (cheap to import: every Airflow
process loads plugins); :mod:`airflow_butido.web.app` is the FastAPI app it mounts under
``/butido``, built on first use in the api-server.
"""
