"""Starting proxal services as real subprocesses on loopback (ephemeral or given ports).

Used by `proxal simulate`/`demo`, `proxal up` and tests: each service is `python -m
proxal.<package>` with `--port P --port-file F`; we wait for the port file and a SERVING
health check.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from proxal.runtime.errors import UnavailableError
from proxal.runtime.healthcheck import check

SERVICES = {  # a service's name → the installed module `python -m` runs
    "encoder_service": "proxal.encoder_service",
    "proxy_service": "proxal.proxy_service",
    "orchestrator": "proxal.orchestrator_service",
}


class ServiceProcess:
    """One service subprocess. Use as a context manager; `address` is host:port."""

    def __init__(
        self,
        module: str,
        store: str,
        extra_args: list[str] | None = None,
        log_path: Path | None = None,
        start_timeout: float = 120.0,
        command: tuple[str, ...] = (),
        port: int = 0,
        detach: bool = False,
        name: str = "",
        until_ready: bool = True,
    ):
        """`command` goes right after the module (``("serve",)`` for the orchestrator);
        `port` 0 takes an ephemeral port. `detach`: the child runs in its own session (a
        terminal's Ctrl-C reaches only us, and we stop it) and is sent SIGTERM by the kernel
        if the thread that spawned it dies (call `spawn` from the main thread). `name` is
        how errors call it (default: the module). `module` is a key of SERVICES or a
        module name. `until_ready` False: starting ends once the server answers health,
        SERVING or not (an orchestrator whose proxies are all down never turns ready)."""
        self.name = name or module
        self.detach = detach
        self.module = SERVICES.get(module, module)
        self.command = command
        self.port = port
        self.store = store
        self.extra_args = extra_args or []
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.until_ready = until_ready
        self.address = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._port_file = Path()
        self._log = Path()
        self._deadline = 0.0

    def start(self) -> ServiceProcess:
        """Spawn the process and wait until it serves → self."""
        self.spawn()
        return self.wait_ready()

    def spawn(self) -> ServiceProcess:
        """Start the process without waiting for it (see `wait_ready`) → self."""
        tmp = Path(tempfile.mkdtemp(prefix=f"proxal-{self.module}-"))
        self._port_file = tmp / "port"
        self._log = self.log_path or tmp / "log"  # its last line explains a failed start
        self._deadline = time.monotonic() + self.start_timeout
        cmd = [
            sys.executable,
            "-m",
            self.module,
            *self.command,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--port-file",
            str(self._port_file),
            "--store",
            self.store,
            *self.extra_args,
        ]
        with self._log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LANCE_LOG": "error"},
                start_new_session=self.detach,
                preexec_fn=_die_with_parent if self.detach else None,
            )
        return self

    def wait_ready(self) -> ServiceProcess:
        """Wait for the port file and SERVING health → self; UnavailableError (the service
        stopped) naming the service and its last log line if it exits or takes too long."""
        assert self.process is not None, "spawn() first"
        try:
            while not self._port_file.exists():
                if self.process.poll() is not None:
                    raise UnavailableError(self.exit_reason())
                if time.monotonic() > self._deadline:
                    raise UnavailableError(
                        f"{self.name} did not start within {self.start_timeout}s"
                    )
                time.sleep(0.05)
            self.address = f"127.0.0.1:{int(self._port_file.read_text())}"
            wait_serving(
                self.address,
                timeout=max(1.0, self._deadline - time.monotonic()),
                live=not self.until_ready,
            )
        except BaseException:  # never leave a half-started service behind
            self.stop()
            raise
        return self

    def exit_reason(self) -> str:
        """Why the process is gone: its exit code and the last line of its log."""
        code = self.process.returncode if self.process is not None else None
        return (
            f"{self.name} exited with code {code}"
            + (" before serving" if not self.address else f" (it served on {self.address})")
            + f": {_last_line(self._log)}"
            + (f" (log: {self.log_path})" if self.log_path else "")
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (continuing the process first, in case it was SIGSTOPped), then SIGKILL
        after `timeout` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, before exec
    """Linux: SIGTERM this process when the thread that forked it dies (PR_SET_PDEATHSIG)."""
    # Not Linux: `proxal up` still stops its children on Ctrl-C and SIGTERM.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _last_line(path: Path) -> str:
    """The last non-blank line of a log (what a service says when it refuses to start)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no output"


def start_all(processes: list[ServiceProcess]) -> list[ServiceProcess]:
    """Start the processes in parallel (each waits until it serves); on any failure stop
    them all and re-raise. → the same list."""
    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        starts = [pool.submit(p.start) for p in processes]
    try:
        for started in starts:
            started.result()
    except BaseException:
        stop_all(processes)
        raise
    return processes


def stop_all(processes: list[ServiceProcess]) -> None:
    """Stop the processes in parallel (each drains its calls for a moment on SIGTERM)."""
    with ThreadPoolExecutor(max(1, len(processes))) as pool:
        list(pool.map(ServiceProcess.stop, processes))


def wait_serving(address: str, timeout: float = 30.0, live: bool = False) -> None:
    """Block until the server at `address` reports SERVING on its health service (over TLS
    when the client environment says so, as `proxal.runtime.healthcheck` does); with
    `live`, until it answers at all."""
    deadline = time.monotonic() + timeout
    while True:
        serving, status = check(address, timeout=2.0, live=live)
        if serving:
            return
        if time.monotonic() > deadline:
            raise UnavailableError(f"{address} not SERVING after {timeout}s: {status}")
        time.sleep(0.1)
