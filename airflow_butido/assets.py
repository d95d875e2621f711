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
    return _asset(package_uri(image_short_name, name, version))


def release_asset(store: str) -> Asset:
    return _asset(release_uri(store))


def _asset(uri: str) -> Asset:
    """``Asset(uri=uri, name=uri, group="butido")``, made without looking the scheme up.

    For a scheme that neither is ``file`` nor starts with ``x-``, ``Asset`` looks up a URI
    normalizer among every installed provider's, importing each provider's handler module on
    the first lookup of a process (the amazon provider's loads boto3: 0.13-0.2 s of CPU in
    every package task's process). No provider handles ``butido``, and these URIs are already
    in the normal form ``Asset`` would give them (a lower-case scheme, every part quoted: no
    user info, query, fragment or trailing slash), so the Asset is made under a URI ``Asset``
    leaves alone and given its own URI afterwards.
    """
    from airflow.sdk import Asset

    asset = Asset(uri=f"x-{uri}", name=uri, group=GROUP)
    object.__setattr__(asset, "uri", uri)  # no converter: the URI is already normal
    return asset
