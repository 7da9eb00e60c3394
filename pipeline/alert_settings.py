"""The ``alerts`` section of the config: where alerts go (webhooks, the JSON-lines log) and the
files that keep them until delivered."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.strict import ConfigError, StrictModel


class WebhookConfig(StrictModel):
    url: str = Field(description="http(s) URL that receives alerts as JSON POSTs.")
    secret_env: str | None = Field(
        None,
        description="Name of the environment variable holding the HMAC-SHA256 signing key "
        "(the key itself never goes in the config).",
    )
    timeout_s: float = Field(5.0, gt=0, description="Seconds to wait for the receiver's answer before retrying.")
    backoff_s: float = Field(0.5, gt=0, description="First retry delay; doubles per attempt, with jitter.")
    max_backoff_s: float = Field(60.0, gt=0, description="Longest delay between two attempts (unless Retry-After).")
    max_age_s: float = Field(
        86_400.0, gt=0, description="An alert still undelivered this long moves to the dead letters."
    )
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Alerts of different cameras posted to this webhook at once; one camera's alerts always go "
        "one at a time, in order.",
    )
    ca_file: str | None = Field(
        None,
        description="For an https URL: a PEM file of the certificate authority (or the receiver's own "
        "self-signed certificate) to trust instead of the system's (relative paths: from the config file's folder).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secret" in data:
            raise ValueError(
                "'secret' is not accepted: put the key in an environment variable and name it with "
                "secret_env (for example secret_env: VIGIL_WEBHOOK_SECRET)"
            )
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"webhook url must start with http:// or https:// and name a host, got {url!r}")
        return url

    @field_validator("ca_file")
    @classmethod
    def _ca_file_for_https(cls, ca_file: str | None, info: ValidationInfo) -> str | None:
        if ca_file is not None and not str(info.data.get("url", "")).startswith("https://"):
            raise ValueError("ca_file is for https:// webhooks; this url is not one")
        return ca_file

    @field_validator("secret_env")
    @classmethod
    def _secret_is_set(cls, name: str | None, info: ValidationInfo) -> str | None:
        environ = (info.context or {}).get("environ")
        if name is not None and environ is not None and not environ.get(name):
            raise ValueError(f"environment variable {name} (the webhook's signing key) is not set")
        return name

    def secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The signing key from the environment (None when the webhook is unsigned)."""
        if self.secret_env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.secret_env)
        if not value:
            raise ConfigError([f"environment variable {self.secret_env} (a webhook's signing key) is not set"])
        return value


class AlertsConfig(StrictModel):
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="Receivers of every alert.")
    log_path: str | None = Field(
        "vigil-alerts.jsonl",
        description="JSON-lines file every alert is appended to (relative paths: from the config file's folder).",
    )
    outbox_path: str = Field(
        "vigil-state/alerts.sqlite",
        description="SQLite outbox of the alert sink: every alert, its deliveries and the dead letters.",
    )
    pending_path: str = Field(
        "vigil-state/fuse-pending.sqlite",
        description="SQLite file where fuse keeps alerts until the sink has stored them.",
    )
    retention_days: float | None = Field(
        30.0,
        gt=0,
        description="Delivered alerts (with their snapshots) are deleted from the outbox this many days after "
        "they were stored; alerts not yet delivered, and dead letters, are kept whatever their age. "
        "null: keep every alert.",
    )
    resend_s: float = Field(2.0, gt=0, description="Fuse resends an alert the sink has not acknowledged this long.")
    snapshot_max_bytes: int = Field(300_000, ge=10_000, description="Largest JPEG snapshot; quality is lowered to fit.")
    end_of_stream_wait_s: float = Field(
        15.0,
        ge=0,
        description="When a replayed file ends, how long its undelivered alerts may hold the run open "
        "(they stay in the outbox and are delivered on the next start); fuse waits as long for the sink to "
        "store its alerts (those it cannot, its disk full, stay in pending_path and are sent on the next start).",
    )

    @field_validator("outbox_path", "pending_path")
    @classmethod
    def _a_file_of_its_own(cls, path: str, info: ValidationInfo) -> str:
        """Two of the alert files in one (a JSON-lines log appended into a SQLite file corrupts it)."""
        for other in ("log_path", "outbox_path"):
            given = info.data.get(other)
            if other != info.field_name and given and os.path.normpath(given) == os.path.normpath(path):
                raise ValueError(f"the same file as alerts.{other}; each alert file needs its own path")
        return path
