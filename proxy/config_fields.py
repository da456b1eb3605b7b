"""Field types and checks shared by every configuration section."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from yarl import URL

PositiveSeconds = Annotated[float, Field(gt=0)]
NonNegativeSeconds = Annotated[float, Field(ge=0)]


class Section(BaseModel):
    """A config table: unknown keys are errors and values never change after load."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_http_url(value: str, *, allow_query: bool) -> str:
    """``value`` if it is an absolute http(s) URL without credentials.

    Credentials are checked first and no message repeats the URL itself, which may
    carry a password or an API key in its query.
    """
    url = URL(value)
    if url.user is not None or url.password is not None:
        raise ValueError("must not carry credentials; use the secret settings instead")
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"must be an absolute http:// or https:// URL (scheme {url.scheme!r}, "
            f"host {url.host!r})"
        )
    if url.fragment or (url.query_string and not allow_query):
        raise ValueError("must not have a query or fragment")
    return value
