"""A store URL whose filesystem is not installed is refused before any connection is used."""

from __future__ import annotations

import pytest

from airflow_butido.object_store import StoreError, _require_filesystem
from airflow_butido.recipes.config import StoreUrl


def test_s3_is_available_with_the_s3_extra() -> None:
    _require_filesystem("staging = s3://bucket/x", StoreUrl("s3://bucket/x"))


def test_a_scheme_without_its_provider_names_what_to_install() -> None:
    with pytest.raises(StoreError) as caught:
        _require_filesystem("staging = gs://bucket/x", StoreUrl("gs://bucket/x"))
    message = str(caught.value)
    assert message.startswith("staging = gs://bucket/x: gs:// stores need")
    assert "airflow.providers.google" in message
    assert "pip install apache-airflow-providers-google gcsfs" in message
