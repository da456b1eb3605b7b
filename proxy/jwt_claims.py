"""Reading a JWT's header and claims without verifying it.

The proxy reads the tokens it is issued only to learn an expiry the provider did
not state, and to describe a token to an operator; the upstream, not the proxy, is
the party that verifies them.
"""

from __future__ import annotations

import base64
import binascii
import json


def decode_jwt_claims(value: str) -> dict[str, object] | None:
    """The claims of a JWT, unverified, or None when ``value`` is not a JWT.

    Used to learn a token's expiry when the provider omitted ``expires_in``, and to
    describe a token to an operator; the upstream, not the proxy, is the party that
    verifies the signature.
    """
    return decode_jwt_parts(value)[1]


def decode_jwt_parts(
    value: str,
) -> tuple[dict[str, object] | None, dict[str, object] | None]:
    """A JWT's header and claims, unverified; (None, None) for anything else."""
    parts = value.split(".")
    if len(parts) != 3:
        return None, None
    decoded = []
    for part in parts[:2]:
        try:
            document = json.loads(
                base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            )
        except (binascii.Error, ValueError):
            return None, None
        if not isinstance(document, dict):
            return None, None
        decoded.append(document)
    return decoded[0], decoded[1]
