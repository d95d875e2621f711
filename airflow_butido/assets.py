"""Airflow Assets of a butido repository: one per package and image, one per release store.

``butido://<image short name>/<name>/<version>`` is updated (an asset event whose ``extra`` is
the package's manifest) when a package task builds new artifacts; a reused package emits
nothing, so a DAG scheduled on the asset runs after a real rebuild only.
``butido://release/<store>`` is updated by ``butido release new`` (through Airflow's REST API
when ``BUTIDO_AIRFLOW_URL`` is set), its ``extra`` naming what was released.

A schedule names them the same way: ``schedule=[package_asset("bookworm", "hello", "2.1")]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from airflow.sdk import Asset

GROUP = "butido"


def package_uri(image_short_name: str, name: str, version: str) -> str:
    parts = (quote(part, safe="") for part in (image_short_name, name, version))
    return "butido://" + "/".join(parts)


def release_uri(store: str) -> str:
    return f"butido://release/{quote(store, safe='')}"


def package_asset(image_short_name: str, name: str, version: str) -> Asset:
    from airflow.sdk import Asset

    uri = package_uri(image_short_name, name, version)
    return Asset(uri=uri, name=uri, group=GROUP)


def release_asset(store: str) -> Asset:
    from airflow.sdk import Asset

    uri = release_uri(store)
    return Asset(uri=uri, name=uri, group=GROUP)
