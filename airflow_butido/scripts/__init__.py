"""Build scripts: assembly of the phases, templating, the ``#BUTIDO:`` log protocol, linting.

Pure code: nothing here imports Airflow, Docker or SQLAlchemy.
"""
