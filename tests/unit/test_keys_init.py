"""`oms keys init`: the keys a compose deployment makes once into a volume and then keeps."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from oms_platform import auth
from oms_platform.codec import MasterKeys
from oms_platform.settings import Settings


def oms(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oms_tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_keys_are_made_once_and_kept(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = oms("keys", "init", "--dir", str(keys))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 4
    made = {p.name: p.read_bytes() for p in keys.iterdir()}
    assert set(made) == {"issuer.pem", "jwks.json", "internal.secret", "codec.keys"}
    for secret in ("issuer.pem", "internal.secret", "codec.keys"):
        assert stat.S_IMODE((keys / secret).stat().st_mode) == 0o600, secret
    MasterKeys.load(keys / "codec.keys")  # a usable codec keys file

    again = oms("keys", "init", "--dir", str(keys))
    assert again.returncode == 0 and again.stdout.count("kept") == 4
    assert {p.name: p.read_bytes() for p in keys.iterdir()} == made


def test_a_token_of_its_issuer_is_accepted_by_processes_reading_its_jwks(
    tmp_path: Path,
) -> None:
    """What compose relies on: the UI's admin token (signed with issuer.pem) is accepted by the
    codec server (verifying with jwks.json)."""
    keys = tmp_path / "keys"
    assert oms("keys", "init", "--dir", str(keys)).returncode == 0
    env = {"OMS_AUTH_SIGNING_KEY_FILE": str(keys / "issuer.pem"), "PATH": "/usr/bin:/bin"}
    issued = oms("token", "issue", "--role", "admin", "--subject", "temporal-ui", env=env)
    assert issued.returncode == 0, issued.stderr
    verifier = auth.Authenticator.from_settings(
        Settings(
            auth_jwks=str(keys / "jwks.json"), internal_secret_file=str(keys / "internal.secret")
        )
    )
    principal = verifier.authenticate(issued.stdout.strip())
    assert principal.subject == "temporal-ui" and auth.ADMIN in principal.roles
