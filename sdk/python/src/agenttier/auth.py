"""Credentials: an API key (``X-API-Key``) or a bearer token.

Most callers pass ``api_key=`` (or set ``AGENTTIER_API_KEY``) and never touch this
module; the classes exist for code written for the v0.8 SDK, which took ``auth=``.
Each provider is an :class:`httpx.Auth`, so it works with sync and async clients.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

import httpx

__all__ = ["AuthProvider", "APIKeyAuth", "BearerTokenAuth", "KubeconfigAuth", "NoAuth"]

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class AuthProvider(httpx.Auth):
    """Adds credentials to each request. Subclasses implement :meth:`apply`."""

    def apply(self, request: httpx.Request) -> None:
        """Sets the credential headers on ``request``."""
        raise NotImplementedError

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """httpx hook: applies the credentials, then sends."""
        self.apply(request)
        yield request


class APIKeyAuth(AuthProvider):
    """Sends ``X-API-Key: <key>``."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.api_key = api_key

    def apply(self, request: httpx.Request) -> None:
        request.headers["X-API-Key"] = self.api_key

    def __repr__(self) -> str:
        return "APIKeyAuth(api_key='***')"


class BearerTokenAuth(AuthProvider):
    """Sends ``Authorization: Bearer <token>`` (an OIDC token)."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must be a non-empty string")
        self.token = token

    def apply(self, request: httpx.Request) -> None:
        request.headers["Authorization"] = f"Bearer {self.token}"

    def __repr__(self) -> str:
        return "BearerTokenAuth(token='***')"


class KubeconfigAuth(AuthProvider):
    """Sends the pod's Kubernetes service-account token as a bearer token, read on every
    request (the kubelet rotates it). Sends nothing when the file does not exist."""

    def __init__(self, token_path: str | os.PathLike[str] | None = None) -> None:
        self.token_path = Path(token_path) if token_path else SERVICE_ACCOUNT_TOKEN

    def apply(self, request: httpx.Request) -> None:
        try:
            token = self.token_path.read_text().strip()
        except OSError:
            return
        if token:
            request.headers["Authorization"] = f"Bearer {token}"


class NoAuth(AuthProvider):
    """Sends no credentials (the server answers 401 on every ``/api/v1`` route)."""

    def apply(self, request: httpx.Request) -> None:
        return None


def resolve_auth(api_key: str | None, auth: AuthProvider | None) -> AuthProvider:
    """Picks the credentials: ``api_key``, else ``auth``, else ``AGENTTIER_API_KEY``,
    else ``AGENTTIER_TOKEN`` (bearer), else a Kubernetes service-account token when
    running in a pod, else none."""
    if api_key and auth is not None:
        raise ValueError("pass either api_key or auth, not both")
    if api_key:
        return APIKeyAuth(api_key)
    if auth is not None:
        return auth
    env_key = os.environ.get("AGENTTIER_API_KEY")
    if env_key:
        return APIKeyAuth(env_key)
    env_token = os.environ.get("AGENTTIER_TOKEN")
    if env_token:
        return BearerTokenAuth(env_token)
    if SERVICE_ACCOUNT_TOKEN.exists():
        return KubeconfigAuth()
    return NoAuth()
