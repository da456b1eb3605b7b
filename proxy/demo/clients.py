"""Who may ask the demo identity provider for a token, and how they prove it.

A caller registers each client with a `ClientRegistration` (or, as before, a bare
secret string); `register_client` checks it once, at start-up, and turns it into the
`RegisteredClient` that authlib and the verifiers consult on every request. Everything
a request needs is prepared here: public keys are imported, stripped of private parts
and given a `kid`, the HS256 key of a client_secret_jwt client is built, the expected
certificate subject is parsed. A registration that could never authenticate is a
`ValueError` naming the client, not a 401 later.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias, get_args

# authlib ships no type information; see oauth2_server for the ignore's second code.
from authlib.oauth2.rfc6749 import ClientMixin  # type: ignore[import-untyped, unused-ignore]
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key, OctKey, RSAKey, import_key

__all__ = [
    "AUTH_METHODS",
    "AuthMethod",
    "ClientRegistration",
    "PublicKey",
    "RegisteredClient",
    "register_client",
]

AuthMethod = Literal[
    "client_secret_basic",
    "client_secret_post",
    "client_secret_jwt",
    "private_key_jwt",
    "tls_client_auth",
]
AUTH_METHODS: frozenset[str] = frozenset(get_args(AuthMethod))

PublicKey: TypeAlias = str | bytes | RSAKey | ECKey | Mapping[str, object]
"""A PEM string or bytes, a joserfc RSA or EC key, or a JWK as a dict."""

# RFC 7518 section 3.2: an HS256 key MUST be at least as long as the hash, 256 bits.
_MIN_HS256_SECRET_BYTES = 32
_CREDENTIALS_NEEDED = (
    "the client_secret_* methods need a secret (of 32 bytes or more for"
    " client_secret_jwt, RFC 7518 section 3.2), private_key_jwt public keys and"
    " tls_client_auth a certificate subject"
)


@dataclass(frozen=True)
class ClientRegistration:
    """The credentials of one client and the methods it may authenticate with.

    `auth_methods` of None means every method of the provider this registration
    carries credentials for: a secret enables client_secret_basic and _post, public
    keys private_key_jwt, a certificate subject tls_client_auth. A client_secret_jwt
    secret is the HS256 key itself (OpenID Connect Core section 9), so only a secret
    of 32 bytes or more (RFC 7518 section 3.2) enables client_secret_jwt.

    Public keys without a `kid` are known by their RFC 7638 thumbprint. For
    tls_client_auth, RFC 8705 section 2.1.2 asks for exactly one of
    `tls_client_auth_subject_dn` (an RFC 4514 string such as `CN=oms,O=Retailer`,
    compared as a parsed name) and `tls_client_auth_san_dns`.
    """

    client_secret: str | None = field(default=None, repr=False)
    public_keys: Sequence[PublicKey] = field(default=(), repr=False)
    tls_client_auth_subject_dn: str | None = None
    tls_client_auth_san_dns: str | None = None
    auth_methods: Collection[AuthMethod] | None = None


@dataclass(frozen=True)
class RegisteredClient(ClientMixin):  # type: ignore[misc]  # authlib's classes are untyped
    """A checked registration, as the token endpoint consults it; repr hides secrets."""

    client_id: str
    client_secret: str | None = field(repr=False)
    auth_methods: frozenset[str]
    hs256_key: OctKey | None = field(default=None, repr=False)
    public_keys: tuple[RSAKey | ECKey, ...] = field(default=(), repr=False)
    subject_dn: x509.Name | None = None
    san_dns: str | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        if self.client_secret is None:
            return False
        return hmac.compare_digest(client_secret.encode(), self.client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in self.auth_methods

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


def register_client(
    client_id: str,
    registration: str | ClientRegistration,
    provider_methods: Collection[str],
) -> RegisteredClient:
    """Check one registration against the provider's methods and prepare it.

    Raises ValueError, naming the client, when the registration asks for a method the
    provider does not serve or lacks the credentials one of its methods needs.
    """
    if not client_id:
        raise ValueError("client ids must be non-empty")
    if isinstance(registration, str):
        registration = ClientRegistration(client_secret=registration)
    dn, dns = (
        registration.tls_client_auth_subject_dn,
        registration.tls_client_auth_san_dns,
    )
    if dn is not None and dns is not None:
        raise ValueError(
            f"client {client_id!r}: give one of tls_client_auth_subject_dn and"
            " tls_client_auth_san_dns, not both (RFC 8705 section 2.1.2)"
        )

    methods = _checked_methods(client_id, registration, provider_methods)
    secret = registration.client_secret
    uses_hs256 = "client_secret_jwt" in methods
    return RegisteredClient(
        client_id=client_id,
        client_secret=secret,
        auth_methods=methods,
        hs256_key=OctKey.import_key(secret.encode()) if uses_hs256 and secret else None,
        public_keys=_public_keys(client_id, registration.public_keys),
        subject_dn=_subject_dn(client_id, registration.tls_client_auth_subject_dn),
        san_dns=registration.tls_client_auth_san_dns,
    )


def _checked_methods(
    client_id: str, registration: ClientRegistration, provider_methods: Collection[str]
) -> frozenset[str]:
    usable = _usable_methods(registration)
    if registration.auth_methods is None:
        methods = usable & frozenset(provider_methods)
        if not methods:
            raise ValueError(
                f"client {client_id!r} has credentials for none of the provider's"
                f" methods {sorted(provider_methods)}; {_CREDENTIALS_NEEDED}"
            )
        return methods

    methods = frozenset(registration.auth_methods)
    foreign = methods - frozenset(provider_methods)
    unusable = methods - usable
    if not methods or foreign:
        raise ValueError(
            f"client {client_id!r}: auth_methods must be drawn from the provider's"
            f" {sorted(provider_methods)}, got {sorted(methods)}"
        )
    if unusable:
        raise ValueError(
            f"client {client_id!r} lacks the credentials for {sorted(unusable)};"
            f" {_CREDENTIALS_NEEDED}"
        )
    return methods


def _usable_methods(registration: ClientRegistration) -> frozenset[str]:
    methods: set[str] = set()
    secret = registration.client_secret
    if secret:
        methods |= {"client_secret_basic", "client_secret_post"}
    if secret and len(secret.encode()) >= _MIN_HS256_SECRET_BYTES:
        methods.add("client_secret_jwt")
    if registration.public_keys:
        methods.add("private_key_jwt")

    subjects = (
        registration.tls_client_auth_subject_dn,
        registration.tls_client_auth_san_dns,
    )
    if any(subject is not None for subject in subjects):
        methods.add("tls_client_auth")
    return frozenset(methods)


def _public_keys(
    client_id: str, keys: Sequence[PublicKey]
) -> tuple[RSAKey | ECKey, ...]:
    public: list[RSAKey | ECKey] = []
    for value in keys:
        key = _import_public_key(client_id, value)
        key.ensure_kid()
        public.append(key)

    kids = [key.kid for key in public]
    if len(set(kids)) != len(kids):
        raise ValueError(f"client {client_id!r} has two public keys with one kid")
    return tuple(public)


def _import_public_key(client_id: str, value: PublicKey) -> RSAKey | ECKey:
    try:
        key = value if isinstance(value, RSAKey | ECKey) else _import_key(value)
    except (JoseError, ValueError, TypeError) as error:
        raise ValueError(
            f"client {client_id!r}: a public key is neither PEM nor a JWK ({error})"
        ) from error
    # RFC 7518 sections 3.3 and 3.4: RS256 wants 2048 bits or more, ES256 P-256.
    rsa_ok = isinstance(key, RSAKey) and key.raw_value.key_size >= 2048
    ec_ok = isinstance(key, ECKey) and key.curve_name == "P-256"
    if not (rsa_ok or ec_ok):
        raise ValueError(
            f"client {client_id!r}: private_key_jwt takes RSA keys of 2048 bits or"
            f" more (RS256) or EC P-256 keys (ES256), not this {key.key_type} key"
        )

    # Keep the public half only, with its kid, whatever the caller handed over.
    public = key.as_dict(private=False)
    if isinstance(key, RSAKey):
        return RSAKey.import_key(public)
    return ECKey.import_key(public)


def _import_key(value: str | bytes | Mapping[str, object]) -> Key:
    if isinstance(value, Mapping):
        return import_key(dict(value))  # type: ignore[arg-type]  # checked by joserfc

    # joserfc warns when it must guess a PEM's key type, so cryptography reads it.
    pem = value.encode() if isinstance(value, str) else value
    try:
        public_key = serialization.load_pem_public_key(pem)
    except ValueError:
        public_key = serialization.load_pem_private_key(pem, password=None).public_key()
    public_pem = public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if isinstance(public_key, rsa.RSAPublicKey):
        return RSAKey.import_key(public_pem)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return ECKey.import_key(public_pem)
    raise ValueError(f"a {type(public_key).__name__} cannot sign RS256 or ES256")


def _subject_dn(client_id: str, subject_dn: str | None) -> x509.Name | None:
    if subject_dn is None:
        return None
    try:
        return x509.Name.from_rfc4514_string(subject_dn)
    except ValueError as error:
        raise ValueError(
            f"client {client_id!r}: tls_client_auth_subject_dn {subject_dn!r} is not"
            " an RFC 4514 name (write it like 'CN=oms,O=Retailer', no spaces)"
        ) from error
