"""References to secrets, and the strict base every config section uses.

Its own module so that config sections defined beside the code that uses them (e.g.
`activities/keys/config.py`) and the config file's schema (`activities/config.py`) share them
without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SecretRef(StrictModel):
    """Where a secret lives. Never the secret itself."""

    env: str | None = None
    secret_arn: str | None = None
    json_key: str | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> SecretRef:
        if (self.env is None) == (self.secret_arn is None):
            raise ValueError("a secret reference needs exactly one of `env` or `secret_arn`")
        return self

    def describe(self) -> str:
        return f"env:{self.env}" if self.env else f"secret:{self.secret_arn}"
