"""`proxal up`: the encoder, N proxy replicas and the orchestrator on loopback, in one command.

Documented ports: encoder 50051, the first proxy 50052, orchestrator 50053; proxy replicas
beyond the first take free ports (printed), and `free_ports` puts every service on one.
Services start in order (the encoder creates the store), each waited on until its gRPC
health says SERVING; then the addresses and the next commands are printed, and the command
watches its children until Ctrl-C or SIGTERM (it stops them all) or until one exits (it
says which, stops the others and fails).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxal.orchestrator_service.rpc.processes import ServiceProcess, stop_all
from proxal.runtime.errors import InvalidArgumentError, UnavailableError

ENCODER_PORT, PROXY_PORT, ORCHESTRATOR_PORT = 50051, 50052, 50053
MAX_PROXIES = 32
READY = "proxal up: ready"


@dataclass(frozen=True)
class UpConfig:
    """What to start: the store directory, the proxy replicas, the ports' policy, where the
    services' logs go (default: a new temporary directory) and the encoder's backend."""

    store: str
    proxies: int = 1
    free_ports: bool = False
    log_dir: Path | None = None
    backend: str = ""
    start_timeout: float = 180.0

    def validate(self) -> None:
        if not 1 <= self.proxies <= MAX_PROXIES:
            raise InvalidArgumentError(
                f"--proxies must be between 1 and {MAX_PROXIES}, got {self.proxies}"
            )


@dataclass(frozen=True)
class Stack:
    """The started services: the encoder, the proxy replicas, the orchestrator."""

    encoder: ServiceProcess
    proxies: list[ServiceProcess]
    orchestrator: ServiceProcess

    @property
    def all(self) -> list[ServiceProcess]:
        return [self.encoder, *self.proxies, self.orchestrator]


def _service(
    config: UpConfig, logs: Path, module: str, name: str, port: int, **kw: object
) -> ServiceProcess:
    return ServiceProcess(
        module,
        config.store,
        log_path=logs / f"{name.replace(' ', '-')}.log",
        start_timeout=config.start_timeout,
        port=0 if config.free_ports else port,
        detach=True,
        name=name,
        **kw,  # type: ignore[arg-type]
    )


def start_stack(config: UpConfig, logs: Path) -> Stack:
    """Start the encoder, then the proxies side by side, then the orchestrator over them;
    on a failure stop what started and raise UnavailableError naming the service."""
    backend = ["--backend", config.backend] if config.backend else []
    encoder = _service(config, logs, "encoder_service", "encoder", ENCODER_PORT, extra_args=backend)
    proxies = [
        _service(config, logs, "proxy_service", f"proxy {n + 1}", PROXY_PORT if n == 0 else 0)
        for n in range(config.proxies)
    ]
    started: list[ServiceProcess] = []
    try:
        started.append(encoder.start())  # it creates the store the others open
        started += [p.spawn() for p in proxies]  # spawned here: they die with this thread
        for proxy in proxies:
            proxy.wait_ready()
        orchestrator = _service(
            config,
            logs,
            "orchestrator",
            "orchestrator",
            ORCHESTRATOR_PORT,
            command=("serve",),
            extra_args=["--proxy", ",".join(p.address for p in proxies)],
        )
        started.append(orchestrator.start())
    except UnavailableError as exc:
        stop_all(started)
        if "already in use" in str(exc) and not config.free_ports:
            raise UnavailableError(f"{exc}; or run proxal up --free-ports") from None
        raise
    except BaseException:
        stop_all(started)
        raise
    return Stack(encoder, proxies, orchestrator)


def ready_text(stack: Stack, config: UpConfig, logs: Path) -> str:
    """The addresses, pids and the next commands to run."""
    proxies = ", ".join(p.address for p in stack.proxies)
    rows = [
        ("encoder", stack.encoder),
        *((f"proxy {n + 1}", p) for n, p in enumerate(stack.proxies)),
        ("orchestrator", stack.orchestrator),
    ]
    lines = [READY]
    for name, service in rows:
        pid = service.process.pid if service.process is not None else 0
        lines.append(f"  {name:<13} {service.address}  (pid {pid})")
    lines += [
        f"  store         {config.store}",
        f"  logs          {logs}",
        f"  the orchestrator balances over the proxies {proxies}",
        "next, in another terminal:",
        f"  export PROXAL_ENCODER_ADDRESS={stack.encoder.address} "
        f"PROXAL_ORCHESTRATOR={stack.orchestrator.address}",
        "  proxal ingest mypool data.csv --text-field text --label-field label",
        "  proxal embed mypool",
        "  proxal session create s1 --pool mypool          # --classes a,b,c if unlabelled",
        "  proxal label s1",
        "  python -c 'from proxal import Client; print(Client("
        f'"{stack.orchestrator.address}").list_sessions())\'',
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def watch(stack: Stack, interval: float = 0.5) -> UnavailableError:
    """Block until a service exits → the error that says which (Ctrl-C and SIGTERM raise
    out of here instead)."""
    while True:
        for service in stack.all:
            if service.process is not None and service.process.poll() is not None:
                return UnavailableError(f"{service.exit_reason()}; stopped the other services")
        time.sleep(interval)


def run_up(config: UpConfig, say: Callable[[str], None] = print) -> None:
    """Start the stack, print it, and watch it until interrupted (every service stopped on
    the way out) or until a service exits (UnavailableError naming it)."""
    config.validate()
    logs = config.log_dir or Path(tempfile.mkdtemp(prefix="proxal-up-"))
    logs.mkdir(parents=True, exist_ok=True)
    say(
        f"proxal up: starting the encoder, {config.proxies} proxy replica(s) and the "
        f"orchestrator over {config.store} (logs in {logs})"
    )
    stack = start_stack(config, logs)
    try:
        say(ready_text(stack, config, logs))
        raise watch(stack)
    finally:
        stop_all(stack.all)
