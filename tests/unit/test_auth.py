"""Bearer tokens: what is accepted as whom, and why everything else is refused."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from oms_platform import auth
from oms_platform.settings import Settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data = tmp_path_factory.mktemp("auth")
    auth.ensure_dev_keys(data / "keys")
    return Settings(data_dir=str(data))


@pytest.fixture(scope="module")
def authenticator(settings: Settings) -> auth.Authenticator:
    return auth.Authenticator.from_settings(settings)


def issued(settings: Settings, role: str, **claims: object) -> str:
    return auth.TokenIssuer.from_settings(settings).issue(f"{role}@test", [role], **claims)  # type: ignore[arg-type]


def test_a_dev_token_names_its_principal_roles_and_locations(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    token = issued(settings, auth.WAREHOUSE, locations=["wh-east"])

    principal = authenticator.authenticate_header(f"Bearer {token}")

    assert principal.subject == "warehouse@test"
    assert principal.roles == {auth.WAREHOUSE}
    assert principal.locations == {"wh-east"}
    assert principal.may_act_for_location("wh-east")
    assert not principal.may_act_for_location("wh-west")
    assert not principal.internal


def test_a_storefront_sees_only_its_channels_and_an_agent_sees_all(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    storefront = authenticator.authenticate(issued(settings, auth.STOREFRONT, channels=["web"]))
    agent = authenticator.authenticate(issued(settings, auth.AGENT))

    assert storefront.may_see_channel("web") and not storefront.may_see_channel("store")
    assert agent.may_see_channel("store")


def test_the_workers_service_token_carries_the_internal_workflow_role(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    identity = auth.ServiceIdentity.for_process(settings, "worker", auth.WORKFLOW)

    principal = authenticator.authenticate(identity())

    assert principal.roles == {auth.WORKFLOW} and principal.internal
    assert identity() == identity()  # reused until it nears expiry


def reason(authenticator: auth.Authenticator, header: str | None) -> str:
    with pytest.raises(auth.Unauthenticated) as refused:
        authenticator.authenticate_header(header)
    return refused.value.reason


def test_missing_and_malformed_credentials_are_refused_with_a_reason(
    authenticator: auth.Authenticator,
) -> None:
    assert "no bearer token" in reason(authenticator, None)
    assert "Bearer <token>" in reason(authenticator, "Basic dXNlcjpwdw==")
    assert "malformed token" in reason(authenticator, "Bearer not-a-jwt")


def test_an_expired_token_is_refused(settings: Settings, authenticator: auth.Authenticator) -> None:
    token = auth.TokenIssuer.from_settings(settings).issue(
        "agent@test", [auth.AGENT], ttl_seconds=60, now=time.time() - 3600
    )
    assert reason(authenticator, f"Bearer {token}") == "token expired"


def test_a_token_for_another_audience_or_from_another_issuer_is_refused(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    dev = auth.TokenIssuer.from_settings(settings)
    other_audience = auth.TokenIssuer(dev.issuer, "billing", dev.key, dev.algorithm, dev.key_id)
    other_issuer = auth.TokenIssuer("evil-idp", dev.audience, dev.key, dev.algorithm, dev.key_id)

    assert "audience" in reason(authenticator, f"Bearer {other_audience.issue('a', [auth.AGENT])}")
    assert "issuer 'evil-idp' is not trusted" in reason(
        authenticator, f"Bearer {other_issuer.issue('a', [auth.AGENT])}"
    )


def test_a_token_signed_by_an_unknown_key_is_refused(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    dev = auth.TokenIssuer.from_settings(settings)
    same_kid = auth.TokenIssuer(dev.issuer, dev.audience, stranger, "ES256", dev.key_id)
    other_kid = auth.TokenIssuer(dev.issuer, dev.audience, stranger, "ES256", "someone-else")

    assert reason(authenticator, f"Bearer {same_kid.issue('a', [auth.ADMIN])}") == (
        "token signature is invalid"
    )
    assert "unknown key id" in reason(authenticator, f"Bearer {other_kid.issue('a', [auth.ADMIN])}")


def test_external_tokens_cannot_claim_the_internal_roles(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    forged = auth.TokenIssuer.from_settings(settings).issue("me", [auth.WORKFLOW])
    assert "held only by oms processes" in reason(authenticator, f"Bearer {forged}")


def test_internal_tokens_need_the_internal_secret(
    settings: Settings, authenticator: auth.Authenticator
) -> None:
    guessed = auth.TokenIssuer(
        auth.INTERNAL_ISSUER, "oms", b"a-guessed-secret-of-thirty-two-bytes!", "HS256"
    )
    assert reason(authenticator, f"Bearer {guessed.issue('worker', [auth.WORKFLOW])}") == (
        "token signature is invalid"
    )


def test_hs256_tokens_are_accepted_only_when_a_development_secret_is_configured(
    settings: Settings, tmp_path: Path
) -> None:
    secret = tmp_path / "hs256.secret"
    secret.write_text("dev-only-secret-of-at-least-32-bytes!!")
    claims = {"iss": "oms-dev", "aud": "oms", "sub": "dev", "roles": ["agent"]}
    token = jwt.encode({**claims, "exp": int(time.time()) + 60}, secret.read_bytes(), "HS256")

    without = auth.Authenticator.from_settings(settings)
    with_secret = auth.Authenticator.from_settings(
        Settings(data_dir=settings.data_dir, auth_hs256_secret_file=str(secret))
    )

    assert "HS256 tokens are not accepted" in reason(without, f"Bearer {token}")
    assert with_secret.authenticate(token).roles == {auth.AGENT}


def test_unknown_roles_are_refused(settings: Settings, authenticator: auth.Authenticator) -> None:
    token = auth.TokenIssuer.from_settings(settings).issue("me", ["superuser"])
    assert "unknown roles: superuser" in reason(authenticator, f"Bearer {token}")


def test_the_dev_keys_are_made_once_and_kept(tmp_path: Path) -> None:
    auth.ensure_dev_keys(tmp_path)
    first = (tmp_path / "issuer.pem").read_bytes()
    auth.ensure_dev_keys(tmp_path)

    assert (tmp_path / "issuer.pem").read_bytes() == first
    key = serialization.load_pem_private_key(first, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert (tmp_path / "internal.secret").stat().st_mode & 0o077 == 0


def test_a_service_refuses_to_start_without_keys(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"internal\.secret"):
        auth.Authenticator.from_settings(Settings(data_dir=str(tmp_path)))


def reveals_payment_tokens(roles: frozenset[str]) -> bool:
    return auth.Principal("someone", roles).sees_payment_tokens()


def test_only_the_workflow_and_services_read_tokens_in_clear() -> None:
    assert reveals_payment_tokens(frozenset({"workflow"}))
    assert reveals_payment_tokens(frozenset({"service"}))
    for role in ("storefront", "agent", "warehouse", "merchandiser", "admin"):
        assert not reveals_payment_tokens(frozenset({role}))
    assert not reveals_payment_tokens(frozenset())
