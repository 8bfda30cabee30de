"""The gateway's exceptions.

    GatewayError
    ├── SettingsError        bad or missing environment variables (all listed at once)
    ├── BrokerUnavailable    no confirm: connection down, timeout, nack or return → 503
    │   └── TopologyMissing  the exchange does not exist and this broker user may not declare it
    └── ApiError             the Tradevine REST API failed (reconciler)
        └── ApiAuthError     401: the OAuth credentials were refused
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class SettingsError(GatewayError):
    """One or more settings are missing or malformed; the message lists each with its fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        # One problem: one line, the bad value and its fix. Several: a line each, all at once.
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} settings need fixing:\n" + "\n".join(f"  - {p}" for p in problems))


class BrokerUnavailable(GatewayError):
    """The broker did not confirm the message; the sender should retry later."""


class TopologyMissing(BrokerUnavailable):
    """The exchange is not declared yet and this (least-privilege) broker user may not declare it."""


class ApiError(GatewayError):
    """The Tradevine REST API answered with an error or not at all."""


class ApiAuthError(ApiError):
    """The Tradevine REST API refused the OAuth credentials (HTTP 401)."""
