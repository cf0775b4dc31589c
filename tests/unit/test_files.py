"""create_once: of processes creating the same key file at once, one wins, none overwrites,
and no reader sees part of a file."""

from __future__ import annotations

import json
import multiprocessing
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from oms_platform import auth
from oms_platform.files import create_once

RACERS = 8
KEY_FILES = ("internal.secret", "issuer.pem", "jwks.json")


def _race(path: str, n: int, start: multiprocessing.synchronize.Event) -> tuple[bool, bytes]:
    start.wait()
    created = create_once(Path(path), f"racer {n}\n".encode() * 10_000)
    return created, Path(path).read_bytes()  # read straight after: whole, whoever wrote it


def test_racing_creators_leave_one_whole_file_and_only_its_creator_says_so(
    tmp_path: Path,
) -> None:
    path = tmp_path / "issuer.pem"
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(RACERS) as pool:
            pending = [pool.apply_async(_race, (str(path), n, start)) for n in range(RACERS)]
            start.set()
            results = [p.get(timeout=30) for p in pending]
    winners = [n for n, (created, _) in enumerate(results) if created]
    assert len(winners) == 1
    kept = f"racer {winners[0]}\n".encode() * 10_000
    assert path.read_bytes() == kept
    assert all(seen == kept for _, seen in results)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["issuer.pem"]  # no temporary left


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "internal.secret"
    assert create_once(path, b"first", 0o644)
    assert not create_once(path, b"second")
    assert path.read_bytes() == b"first"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _start_a_stack(keys_dir: str, start: multiprocessing.synchronize.Event) -> dict[str, bytes]:
    start.wait()
    directory = auth.ensure_dev_keys(keys_dir)
    # The files a stack reads (another racer's file being written aside may sit beside them).
    return {name: (directory / name).read_bytes() for name in KEY_FILES}


def test_processes_creating_the_dev_keys_at_once_all_start_with_the_same_keys(
    tmp_path: Path,
) -> None:
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(RACERS) as pool:
        for race in range(5):  # several races: any one may happen to run in turn
            keys_dir = tmp_path / f"keys-{race}"
            start = manager.Event()
            pending = [
                pool.apply_async(_start_a_stack, (str(keys_dir), start)) for _ in range(RACERS)
            ]
            start.set()
            seen = [p.get(timeout=30) for p in pending]  # none raised
            assert all(keys == seen[0] for keys in seen), [
                name for keys in seen for name in KEY_FILES if keys[name] != seen[0][name]
            ]
            # The JWKS publishes the signing key that was kept, not another racer's.
            signing = serialization.load_pem_private_key(seen[0]["issuer.pem"], password=None)
            [published] = json.loads(seen[0]["jwks.json"])["keys"]
            assert published["kid"] == auth._key_id(signing.public_key())
