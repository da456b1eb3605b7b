"""tls_client_auth: clients that authenticate with their TLS certificate.

RFC 8705 section 2.1, PKI method. The token endpoint is served over TLS with a
context that requests client certificates (`ssl.CERT_OPTIONAL`) and trusts the CA
that issues them (`load_verify_locations`); the handshake itself refuses a
certificate that does not chain to that CA. What remains for the token endpoint is
the second half: the token request names its `client_id` in the form, and the
verified certificate must carry the subject registered for that client, either the
whole subject DN or a SAN DNS name (RFC 8705 section 2.1.2).

The invariant: only a certificate the TLS layer verified counts. `getpeercert()`
answers an empty dict for a certificate it did not verify (a context with
`ssl.CERT_NONE`); such a certificate is treated as absent.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from aiohttp import hdrs, web

# authlib ships no type information; see oauth2_server for the ignore's second code.
from authlib.oauth2.rfc6749 import OAuth2Request  # type: ignore[import-untyped, unused-ignore]
from cryptography import x509

from proxy.demo.client_assertions import refuse_client
from proxy.demo.clients import RegisteredClient

__all__ = ["authenticate_tls_client", "certificate_matches", "peer_certificate"]

QueryClient = Callable[[str], RegisteredClient | None]

# Credentials of the other methods; a request carrying one is not tls_client_auth's.
_OTHER_CREDENTIALS = ("client_secret", "client_assertion", "client_assertion_type")


def peer_certificate(request: web.Request) -> x509.Certificate | None:
    """The client certificate the TLS layer verified on this connection, if any."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    if not ssl_object.getpeercert():
        return None

    der = ssl_object.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der) if der else None


def authenticate_tls_client(
    query_client: QueryClient, request: OAuth2Request
) -> RegisteredClient | None:
    """authlib's client auth function for tls_client_auth.

    Returns None when the request carries another method's credentials; otherwise
    the client, or a 401 invalid_client when no verified certificate came with the
    request or it is not the one registered for the `client_id`.
    """
    form = request.payload.data
    client_id = form.get("client_id")
    has_others = any(name in form for name in _OTHER_CREDENTIALS)
    if not client_id or has_others or hdrs.AUTHORIZATION in request.headers:
        return None

    certificate: x509.Certificate | None = request.client_certificate
    if certificate is None:
        raise refuse_client("No verified client certificate came with the request.")

    client = query_client(client_id)
    if (
        client is None
        or not client.check_endpoint_auth_method("tls_client_auth", "token")
        or not certificate_matches(client, certificate)
    ):
        raise refuse_client("The client certificate does not authenticate this client.")
    return client


def certificate_matches(
    client: RegisteredClient, certificate: x509.Certificate
) -> bool:
    """Tell whether `certificate` carries the subject registered for `client`.

    The subject DN is compared as a parsed name: the same attributes, in the same
    order, with the same values. A SAN DNS name matches without regard to case
    (RFC 4343).
    """
    if client.subject_dn is not None:
        return certificate.subject == client.subject_dn
    if client.san_dns is None:
        return False

    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except x509.ExtensionNotFound:
        return False
    expected = client.san_dns.lower()
    return any(
        name.lower() == expected for name in san.value.get_values_for_type(x509.DNSName)
    )
