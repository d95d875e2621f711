"""Airflow operators of airflow-butido."""
