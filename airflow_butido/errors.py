"""The exceptions a user may see. The CLI prints their message, never a traceback."""

from __future__ import annotations


class ButidoError(Exception):
    """Base of every error that is the user's input or environment, not a bug."""


class ConfigError(ButidoError):
    """config.toml (or its overrides) is missing, malformed or invalid."""


class ResolveError(ButidoError):
    """A package or dependency cannot be found, or the dependencies form a cycle."""


class BuildError(ButidoError):
    """A package build failed (script error, container failure, bad outputs)."""


class InfrastructureError(ButidoError):
    """An endpoint, the Docker API or the database failed; worth retrying elsewhere."""
