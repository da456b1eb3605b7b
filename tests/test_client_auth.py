"""Every client authentication method, against a provider that really checks it.

The provider is the demo's authlib-based server: it verifies RFC 7523 assertions
(signature, issuer, audience, expiry, one-time jti) and RFC 8705 client
certificates, so a token here means the proxy authenticated correctly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from joserfc.jwk import RSAKey

from proxy.client_auth import parse_signing_key
from proxy.demo import ClientRegistration
from proxy.demo.identity_provider import IdentityProvider
from proxy.source_config import OAuth2SourceConfig
from proxy.token_sources import ClientCredentialsSource
from proxy.tokens import TokenFetchError, TokenGrant
from tests.conftest import AiohttpServer, ProxyFactory, RecordingUpstream
from tests.pki import (
    issue_client_cert,
    make_ec_key,
    make_pki,
    make_rsa_key,
    server_ssl_context,
)

LONG_SECRET = "a-client-secret-of-at-least-32-bytes+/:%"


async def fetch(**config: Any) -> TokenGrant:
    source = OAuth2SourceConfig.model_validate(
        {"client_id": "oms", "timeout_s": 5, **config}
    )
    async with aiohttp.ClientSession() as session:
        return await ClientCredentialsSource(source, session).fetch_token()


async def test_client_secret_jwt_gets_a_token_with_a_fresh_jti_each_time(
    aiohttp_server: AiohttpServer,
) -> None:
    """Two requests both succeed, so the provider saw two different jti values."""
    idp = IdentityProvider({"oms": LONG_SECRET}, auth_methods=("client_secret_jwt",))
    server = await aiohttp_server(idp.build_app())
    token_url = str(server.make_url("/oauth2/token"))

    first = await fetch(
        token_url=token_url, auth_method="client_secret_jwt", client_secret=LONG_SECRET
    )
    second = await fetch(
        token_url=token_url, auth_method="client_secret_jwt", client_secret=LONG_SECRET
    )

    assert idp.verify(first.value)
    assert idp.verify(second.value)
    assert idp.tokens_issued == 2


@pytest.mark.parametrize(
    ("alg", "make_key"), [("RS256", make_rsa_key), ("ES256", make_ec_key)]
)
async def test_private_key_jwt_signs_with_the_configured_key_and_kid(
    aiohttp_server: AiohttpServer, tmp_path: Path, alg: str, make_key: Any
) -> None:
    """RS256 and ES256 assertions carrying a kid are accepted by the provider."""
    pair = make_key(tmp_path)
    public = parse_signing_key(pair.private_pem, alg).as_dict(private=False)
    idp = IdentityProvider(
        {"oms": ClientRegistration(public_keys=[{**public, "kid": "oms-2026"}])},
        auth_methods=("private_key_jwt",),
    )
    server = await aiohttp_server(idp.build_app())

    grant = await fetch(
        token_url=str(server.make_url("/oauth2/token")),
        auth_method="private_key_jwt",
        private_key_file=str(pair.private_key),
        key_id="oms-2026",
        signing_alg=alg,
    )

    assert idp.verify(grant.value)


async def test_private_key_jwt_with_a_key_the_provider_does_not_know_is_refused(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """A signature by another key is invalid_client, and nothing about the key leaks."""
    registered = make_rsa_key(tmp_path, "registered")
    other = make_rsa_key(tmp_path, "other")
    idp = IdentityProvider(
        {"oms": ClientRegistration(public_keys=[registered.public_pem])},
        auth_methods=("private_key_jwt",),
    )
    server = await aiohttp_server(idp.build_app())

    with pytest.raises(TokenFetchError) as caught:
        await fetch(
            token_url=str(server.make_url("/oauth2/token")),
            auth_method="private_key_jwt",
            private_key_file=str(other.private_key),
        )

    assert caught.value.reason == "token endpoint answered 401 invalid_client"
    assert idp.tokens_issued == 0


async def test_tls_client_auth_authenticates_with_the_client_certificate(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """The certificate's subject identifies the client; the private CA is trusted."""
    pki = make_pki(tmp_path)
    cert = issue_client_cert(pki, "CN=oms,O=Retailer")
    idp = IdentityProvider(
        {"oms": ClientRegistration(tls_client_auth_subject_dn="CN=oms,O=Retailer")},
        auth_methods=("tls_client_auth",),
    )
    server = await aiohttp_server(
        idp.build_app(), ssl=server_ssl_context(pki, require_client_cert=False)
    )

    grant = await fetch(
        token_url=str(server.make_url("/oauth2/token")),
        auth_method="tls_client_auth",
        tls_client_cert_file=str(cert.cert),
        tls_client_key_file=str(cert.key),
        ca_file=str(pki.ca_cert),
    )

    assert idp.verify(grant.value)


async def test_token_endpoint_certificate_is_verified_by_default(
    aiohttp_server: AiohttpServer, tmp_path: Path
) -> None:
    """Without ca_file, a certificate from a private CA is not trusted."""
    pki = make_pki(tmp_path)
    idp = IdentityProvider({"oms": LONG_SECRET})
    server = await aiohttp_server(
        idp.build_app(), ssl=server_ssl_context(pki, require_client_cert=False)
    )

    with pytest.raises(TokenFetchError) as caught:
        await fetch(
            token_url=str(server.make_url("/oauth2/token")), client_secret=LONG_SECRET
        )

    assert "unreachable" in caught.value.reason
    assert idp.token_requests == 0


async def test_json_token_endpoint_with_nested_fields(
    aiohttp_server: AiohttpServer,
) -> None:
    """A JSON body goes out and the token and lifetime are read from data.*."""
    idp = IdentityProvider(
        {"oms": LONG_SECRET}, request_format="json", token_lifetime_s=1800
    )
    server = await aiohttp_server(idp.build_app("/tenant/oauth2/token"))

    grant = await fetch(
        token_url=str(server.make_url("/tenant/oauth2/token")),
        client_secret=LONG_SECRET,
        auth_method="client_secret_post",
        request_format="json",
        token_field="data.accessToken",
        expires_in_field="data.expiresIn",
        token_type_field="data.tokenType",
    )

    assert idp.verify(grant.value)
    assert grant.expires_in_s == 1800


async def test_private_key_jwt_through_the_proxy(
    make_proxy: ProxyFactory,
    aiohttp_server: AiohttpServer,
    tmp_path: Path,
) -> None:
    """End to end: the upstream accepts what the assertion-authenticated client got."""
    pair = make_rsa_key(tmp_path)
    idp = IdentityProvider(
        {"oms": ClientRegistration(public_keys=[pair.public_pem])},
        auth_methods=("private_key_jwt",),
    )
    idp_server: TestServer = await aiohttp_server(idp.build_app())
    recorder = RecordingUpstream(idp)
    upstream_server = await aiohttp_server(recorder.app())
    proxy = await make_proxy(
        token_url=str(idp_server.make_url("/oauth2/token")),
        upstream_url=str(upstream_server.make_url("/")),
        source={
            "client_id": "oms",
            "client_secret": None,
            "auth_method": "private_key_jwt",
            "private_key_file": str(pair.private_key),
        },
    )

    response = await proxy.post("/inventory/T/v1/reservations", json={"lines": []})

    assert response.status == 200
    assert recorder.calls[0].authorized
    assert pair.private_pem not in str(recorder.calls[0].headers)


async def test_provider_rate_limit_reaches_callers_as_retry_after(
    make_proxy: ProxyFactory, aiohttp_server: AiohttpServer
) -> None:
    """IBM-style 1,000/hour limit, here 1: the 429's Retry-After is passed on."""
    idp = IdentityProvider({"oms": LONG_SECRET}, max_token_requests_per_hour=1)
    server = await aiohttp_server(idp.build_app())
    proxy = await make_proxy(
        token_url=str(server.make_url("/oauth2/token")),
        source={"client_id": "oms", "client_secret": LONG_SECRET},
    )
    assert (await proxy.get("/readyz")).status == 200
    idp.revoke()

    response = await proxy.get("/inventory/x")

    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 3000
    assert idp.token_requests == 2


def test_signing_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    """An RSA key configured for ES256 is caught when the config loads."""
    pair = make_rsa_key(tmp_path)

    with pytest.raises(ValueError, match="no P-256 EC private key for ES256"):
        parse_signing_key(pair.private_pem, "ES256")
    assert isinstance(parse_signing_key(pair.private_pem, "RS256"), RSAKey)
