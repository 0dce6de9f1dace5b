"""The API's own settings, from ``STABLENEW_API_*`` environment variables."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """Who may use ``stablenew serve`` and from where.

    - ``token`` (``STABLENEW_API_TOKEN``): the one bearer token. Required for every request that
      changes something, and for reads unless ``public_read``. Without it nothing but public reads
      is allowed.
    - ``public_read`` (``STABLENEW_API_PUBLIC_READ``, or ``serve --public-read``): reads need no token.
    - ``cors_origins`` (``STABLENEW_API_CORS_ORIGINS``, comma-separated): origins a browser may call
      the API from; empty (the default) sends no CORS headers at all.
    """

    model_config = SettingsConfigDict(env_prefix="STABLENEW_API_", extra="ignore")

    token: SecretStr | None = None
    public_read: bool = False
    cors_origins: str = ""

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]
