"""How the proxy proves who it is to a token endpoint.

Five methods, by their registered names (RFC 7591 §2):

* ``client_secret_basic``: HTTP Basic with id and secret form-encoded first
  (RFC 6749 §2.3.1). authlib's client encodes the raw values and would garble a
  secret holding ``:`` or ``%``, hence our own.
* ``client_secret_post``: id and secret in the request body.
* ``client_secret_jwt`` and ``private_key_jwt``: a short-lived JWT assertion signed
  with the secret (HS256) or a private key (RS256, ES256), with a fresh ``jti`` each
  time (RFC 7523 §2.2, OIDC Core §9), built with authlib's assertion signer.
* ``tls_client_auth``: the client certificate presented in the TLS handshake
  (RFC 8705 §2.1); the body carries only ``client_id``.

Secrets and keys come from ``WatchedFile`` readers, so a rotated file is picked up on
the next token request.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from authlib.oauth2.rfc7523 import (  # type: ignore[import-untyped]
    client_secret_jwt_sign,
    private_key_jwt_sign,
)
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OctKey, RSAKey

from proxy.secret_files import WatchedFile

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class KeyFileError(ValueError):
    """A private key file that does not hold a key for the configured algorithm."""


def client_secret_basic(client_id: str, client_secret: str) -> str:
    """The Authorization header value for ``client_secret_basic`` (RFC 6749 §2.3.1)."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


def parse_signing_key(pem: str, signing_alg: str) -> RSAKey | ECKey:
    """The private key in ``pem``, checked to fit ``signing_alg`` (RS256 or ES256)."""
    key_type: type[RSAKey] | type[ECKey] = RSAKey if signing_alg == "RS256" else ECKey
    try:
        key = key_type.import_key(pem)
    except (JoseError, ValueError, TypeError):
        kind = "RSA" if key_type is RSAKey else "P-256 EC"
        raise KeyFileError(f"holds no {kind} private key for {signing_alg}") from None
    if not key.is_private:
        raise KeyFileError("holds a public key; the private key is needed to sign")
    if isinstance(key, ECKey) and key.curve_name != "P-256":
        raise KeyFileError(f"holds a {key.curve_name} key; ES256 needs P-256")
    return key


@dataclass(frozen=True, slots=True)
class ClientAuthentication:
    """One client's way of authenticating, applied to each token request."""

    client_id: str
    method: str
    audience: str
    secret: WatchedFile[str] | str | None = field(default=None, repr=False)
    signing_key: WatchedFile[RSAKey | ECKey] | None = field(default=None, repr=False)
    signing_alg: str | None = None
    key_id: str | None = None
    assertion_lifetime_s: float = 60.0

    def apply(self, params: dict[str, str], headers: dict[str, str]) -> None:
        """Add this client's credentials to a token request's ``params``/``headers``."""
        if self.method == "client_secret_basic":
            headers["Authorization"] = client_secret_basic(
                self.client_id, self._secret()
            )
        elif self.method == "client_secret_post":
            params.update(client_id=self.client_id, client_secret=self._secret())
        elif self.method == "tls_client_auth":
            params["client_id"] = self.client_id
        else:
            params.update(
                client_id=self.client_id,
                client_assertion_type=JWT_BEARER_ASSERTION,
                client_assertion=self._assertion(),
            )

    def _secret(self) -> str:
        if isinstance(self.secret, WatchedFile):
            return self.secret.read()
        return self.secret or ""

    def _assertion(self) -> str:
        header = {"alg": self.signing_alg, "typ": "JWT"}
        if self.key_id:
            header["kid"] = self.key_id
        lifetime = max(1, int(self.assertion_lifetime_s))
        if self.method == "client_secret_jwt":
            key = OctKey.import_key(self._secret())
            return str(
                client_secret_jwt_sign(
                    key,
                    self.client_id,
                    self.audience,
                    alg=self.signing_alg,
                    header=header,
                    expires_in=lifetime,
                )
            )
        if self.signing_key is None:
            raise KeyFileError("private_key_jwt needs private_key_file")
        return str(
            private_key_jwt_sign(
                self.signing_key.read(),
                self.client_id,
                self.audience,
                alg=self.signing_alg,
                header=header,
                expires_in=lifetime,
            )
        )


class TlsContextCache:
    """An SSL context for a token endpoint, rebuilt when its files change.

    Holds the private CA (``ca_file``) and the client certificate and key that
    ``tls_client_auth`` presents. Verification stays on unless ``verify`` is False,
    which only an explicit ``tls_verify = false`` asks for.
    """

    def __init__(
        self,
        ca_file: Path | None,
        cert_file: Path | None,
        key_file: Path | None,
        *,
        verify: bool = True,
    ) -> None:
        self._files = [path for path in (ca_file, cert_file, key_file) if path]
        self._verify = verify
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._signature: tuple[tuple[int, int], ...] | None = None
        self._context: ssl.SSLContext | None = None

    def context(self) -> ssl.SSLContext | None:
        """The current context, or None when the default trust store suffices."""
        if not self._files and self._verify:
            return None
        signature = tuple(
            (path.stat().st_size, path.stat().st_mtime_ns) for path in self._files
        )
        if signature != self._signature or self._context is None:
            self._context = self._build()
            self._signature = signature
        return self._context

    def _build(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self._ca_file) if self._ca_file else None
        )
        if self._cert_file and self._key_file:
            context.load_cert_chain(self._cert_file, self._key_file)
        if not self._verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context
