"""Tests for proxy.demo.mtls: tls_client_auth over a real TLS token endpoint."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pki import (
    ClientCert,
    Pki,
    client_ssl_context,
    issue_client_cert,
    make_pki,
    server_ssl_context,
)
from pytest_aiohttp import AiohttpClient, AiohttpServer

from proxy.demo.identity_provider import ClientRegistration, IdentityProvider

Client = TestClient[web.Request, web.Application]

PATH = "/oauth2/token"
OMS_DN = "CN=oms-inventory,O=Retailer,C=GB"
GRANT = {"grant_type": "client_credentials", "client_id": "oms"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def oms_cert(pki: Pki) -> ClientCert:
    return issue_client_cert(pki, OMS_DN)


@pytest.fixture
def idp() -> IdentityProvider:
    return IdentityProvider(
        {
            "oms": ClientRegistration(tls_client_auth_subject_dn=OMS_DN),
            "by-dns": ClientRegistration(
                tls_client_auth_san_dns="oms.retailer.example"
            ),
        },
        auth_methods=("tls_client_auth",),
    )


@pytest.fixture
async def server(
    idp: IdentityProvider, pki: Pki, aiohttp_server: AiohttpServer
) -> TestServer:
    context = server_ssl_context(pki, require_client_cert=False)
    return await aiohttp_server(idp.build_app(PATH), ssl=context)


@pytest.fixture
async def client(server: TestServer, aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(server)


async def request_token(
    client: Client, context: ssl.SSLContext, form: dict[str, str] = GRANT
) -> tuple[int, dict[str, str]]:
    """POST a token request over TLS with `context`; return status and body."""
    response = await client.post(PATH, data=form, ssl=context)
    return response.status, await response.json()


async def test_certificate_with_the_registered_subject_gets_a_token(
    idp: IdentityProvider, client: Client, pki: Pki, oms_cert: ClientCert
) -> None:
    """A CA-issued certificate carrying the registered subject DN earns a token."""
    status, answer = await request_token(client, client_ssl_context(pki, oms_cert))

    assert status == 200
    assert idp.verify(answer["access_token"])


async def test_certificate_with_the_registered_san_dns_gets_a_token(
    client: Client, pki: Pki
) -> None:
    """A client registered by SAN DNS name is matched on the name, in any case."""
    certificate = issue_client_cert(
        pki, "CN=whatever,O=Retailer", san_dns="OMS.Retailer.example"
    )
    form = {**GRANT, "client_id": "by-dns"}

    status, _ = await request_token(client, client_ssl_context(pki, certificate), form)

    assert status == 200


async def test_request_without_a_certificate_is_refused(
    idp: IdentityProvider, client: Client, pki: Pki
) -> None:
    """A TLS request that presents no client certificate gets a 401 invalid_client."""
    status, answer = await request_token(client, client_ssl_context(pki))

    assert status == 401
    assert answer["error"] == "invalid_client"
    assert "No verified client certificate" in answer["error_description"]
    assert idp.tokens_issued == 0


async def test_certificate_with_another_subject_is_refused(
    client: Client, pki: Pki
) -> None:
    """A certificate from the trusted CA but for another subject gets a 401."""
    someone_else = issue_client_cert(pki, "CN=oms-pricing,O=Retailer,C=GB")

    status, answer = await request_token(client, client_ssl_context(pki, someone_else))

    assert status == 401
    assert answer["error"] == "invalid_client"


async def test_certificate_for_another_client_id_is_refused(
    client: Client, pki: Pki, oms_cert: ClientCert
) -> None:
    """The oms certificate does not authenticate the client registered by DNS name."""
    form = {**GRANT, "client_id": "by-dns"}

    status, _ = await request_token(client, client_ssl_context(pki, oms_cert), form)

    assert status == 401


async def test_unknown_client_reads_like_a_wrong_subject(
    client: Client, pki: Pki, oms_cert: ClientCert
) -> None:
    """An unknown client_id gets the answer a mismatched certificate gets."""
    context = client_ssl_context(pki, oms_cert)

    unknown = await request_token(client, context, {**GRANT, "client_id": "nobody"})
    mismatch = await request_token(client, context, {**GRANT, "client_id": "by-dns"})

    assert unknown == mismatch


async def test_certificate_from_another_ca_is_refused_during_the_handshake(
    idp: IdentityProvider, client: Client, pki: Pki, tmp_path: Path
) -> None:
    """A certificate the server's CA did not sign never gets past TLS."""
    other_pki = make_pki(tmp_path / "other", ca_name="Someone Else's CA")
    impostor = issue_client_cert(other_pki, OMS_DN)

    with pytest.raises(aiohttp.ClientError):
        await request_token(client, client_ssl_context(pki, impostor))

    assert idp.token_requests == 0


async def test_client_secret_on_a_tls_only_provider_is_refused(
    client: Client, pki: Pki, oms_cert: ClientCert
) -> None:
    """A secret in the form is not tls_client_auth, even with the right certificate."""
    form = {**GRANT, "client_secret": "anything"}

    status, answer = await request_token(
        client, client_ssl_context(pki, oms_cert), form
    )

    assert status == 401
    assert answer["error"] == "invalid_client"


async def test_plain_http_has_no_client_certificate(
    aiohttp_client: AiohttpClient,
) -> None:
    """Without TLS there is no certificate to check, so tls_client_auth gets a 401."""
    idp = IdentityProvider(
        {"oms": ClientRegistration(tls_client_auth_subject_dn=OMS_DN)},
        auth_methods=("tls_client_auth",),
    )
    client = await aiohttp_client(idp.build_app(PATH))

    response = await client.post(PATH, data=GRANT)

    assert response.status == 401


def test_registration_needs_exactly_one_certificate_subject() -> None:
    """RFC 8705 section 2.1.2: a DN and a SAN DNS name together are refused."""
    both = ClientRegistration(
        tls_client_auth_subject_dn=OMS_DN,
        tls_client_auth_san_dns="oms.retailer.example",
        auth_methods=("tls_client_auth",),
    )

    with pytest.raises(ValueError, match="not both"):
        IdentityProvider({"oms": both}, auth_methods=("tls_client_auth",))


def test_malformed_subject_dn_is_refused_at_registration() -> None:
    """A subject DN that is not RFC 4514 is a ValueError that shows the value."""
    with pytest.raises(ValueError, match="CN = oms"):
        IdentityProvider(
            {"oms": ClientRegistration(tls_client_auth_subject_dn="CN = oms; O = x")},
            auth_methods=("tls_client_auth",),
        )


async def test_provider_serving_every_method_routes_each_request_to_its_own(
    pki: Pki,
    oms_cert: ClientCert,
    aiohttp_server: AiohttpServer,
    aiohttp_client: AiohttpClient,
) -> None:
    """With every method on, a bare client_id means the certificate, a secret a post."""
    registration = ClientRegistration(
        client_secret="oms-secret", tls_client_auth_subject_dn=OMS_DN
    )
    idp = IdentityProvider(
        {"oms": registration},
        auth_methods=(
            "client_secret_basic",
            "client_secret_post",
            "client_secret_jwt",
            "private_key_jwt",
            "tls_client_auth",
        ),
    )
    context = server_ssl_context(pki, require_client_cert=False)
    client = await aiohttp_client(
        await aiohttp_server(idp.build_app(PATH), ssl=context)
    )
    with_cert = client_ssl_context(pki, oms_cert)
    secret_form = {**GRANT, "client_secret": "oms-secret"}

    by_cert, _ = await request_token(client, with_cert)
    by_secret, _ = await request_token(client, client_ssl_context(pki), secret_form)
    wrong_secret, _ = await request_token(
        client, with_cert, {**GRANT, "client_secret": "wrong"}
    )

    assert (by_cert, by_secret, wrong_secret) == (200, 200, 401)
