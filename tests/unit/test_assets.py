"""The package and release Assets: Airflow's own Asset values, made without loading every
provider's URI handlers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from airflow_butido.assets import GROUP, package_asset, package_uri, release_asset, release_uri


@pytest.mark.parametrize(
    ("made", "uri"),
    [
        (lambda: package_asset("bookworm", "hello", "2.1"), "butido://bookworm/hello/2.1"),
        (
            lambda: package_asset("b", "lib+x/y?#", "1.0~rc1"),
            package_uri("b", "lib+x/y?#", "1.0~rc1"),
        ),
        (lambda: release_asset("stable"), release_uri("stable")),
    ],
)
def test_the_asset_is_the_one_airflow_makes_of_its_uri(made, uri):
    from airflow.sdk import Asset

    asset = made()
    assert asset.uri == uri
    assert asset == Asset(uri=uri, name=uri, group=GROUP)  # the URI is already normal


def test_making_a_package_asset_imports_no_providers_uri_handlers():
    code = (
        "import sys\n"
        "from airflow_butido.assets import package_asset\n"
        "asset = package_asset('bookworm', 'hello', '2.1')\n"
        "print(asset.uri, 'boto3' in sys.modules)\n"
        "from airflow.sdk import Asset\n"
        "Asset(uri=asset.uri, name=asset.uri)\n"  # the lookup the helper avoids
        "print('airflow.providers.amazon.aws.assets.s3' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = done.stdout.split("\n")[:2]
    assert first == "butido://bookworm/hello/2.1 False"
    assert second == "True"  # without the helper, the amazon provider's handler is imported
