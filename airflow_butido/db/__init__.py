"""The build database: schema, migrations and the functions that read and write it.

Import the submodules directly (``airflow_butido.db.records`` ...); this package
stays empty so that importing it does not load SQLAlchemy.
"""
