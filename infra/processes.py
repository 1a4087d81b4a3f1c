"""Real servers in their own processes, for the tests, the benchmarks and the local stack."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import NoReturn

from infra.local_postgres import wait_for_port

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TAIL_LINES = 20


@contextmanager
def server_process(
    command: list[str],
    port: int,
    env: dict[str, str] | None = None,
    quiet: bool = False,
    start_seconds: float = 30,
) -> Iterator[None]:
    """A real server in its own process: started, awaited on its port, stopped."""
    output = subprocess.DEVNULL if quiet else None
    process = subprocess.Popen(command, env=env, stdout=output, stderr=output)
    try:
        wait_for_port("127.0.0.1", port, start_seconds)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def describe_exit(returncode: int) -> str:
    """`exited with code 1`, `was killed by SIGKILL`: a Popen returncode in words."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


@dataclass
class Child:
    """A process a Supervisor watches: one it started (`process`), or a server that put
    itself in the background (pg_ctl's postmaster), known by its pid alone."""

    name: str
    pid: int
    log: Path | None = None
    log_offset: int = 0  # where this run's output starts in `log` (log files are appended to)
    process: subprocess.Popen[bytes] | None = None

    def exit_status(self) -> str | None:
        """None while it runs; else how it ended, in words."""
        if self.process is not None:
            returncode = self.process.poll()
            return None if returncode is None else describe_exit(returncode)
        try:
            os.kill(self.pid, 0)
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except ProcessLookupError:
            state = "gone"
        except (OSError, IndexError):
            state = "running"  # it exists (under another user), or no /proc to say more
        if state in ("gone", "Z", "X"):
            return "is no longer running (not a child of the stack: exit status unknown)"
        return None

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines of this run's output in its log."""
        if self.log is None:
            return []
        try:
            with self.log.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                start = max(self.log_offset, size - 64 * 1024)
                log.seek(start)
                text = log.read().decode(errors="replace").splitlines()
        except OSError:
            return []
        if start > self.log_offset:
            text = text[1:]  # began mid-line
        return text[-lines:]


class ChildExited(Exception):
    """A supervised process ended while the others were meant to keep running."""

    def __init__(self, child: Child, status: str) -> None:
        super().__init__(f"{child.name} (pid {child.pid}) {status}")
        self.child = child

    def report(self) -> str:
        """Which child, how it ended, and the end of its log."""
        lines = [str(self)]
        if self.child.log is not None:
            tail = self.child.tail()
            if tail:
                lines.append(
                    f"last {len(tail)} line{'s' if len(tail) > 1 else ''} of {self.child.log}:"
                )
                lines += [f"  | {line}" for line in tail]
            else:
                lines.append(f"no output from this run in {self.child.log}")
        return "\n".join(lines)


class StopSignal(BaseException):
    """Raised in the main thread by SIGINT, SIGTERM or SIGHUP (a BaseException, like
    KeyboardInterrupt, so that no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Supervisor:
    """Child processes started, watched and stopped together, as the local stack runs them.

    Each child runs in its own process group with its output in `log_dir/<name>.log`. `run`
    starts them, watches them, and stops them all when one exits (saying which, how, and
    the end of its log) or when SIGINT, SIGTERM or SIGHUP arrives (saying which): SIGTERM
    to each child's group, SIGKILL to what is left after `grace_seconds`. A SIGHUP that was
    ignored when the supervisor started (`nohup`) stays ignored.
    """

    def __init__(
        self, cwd: Path, log_dir: Path, grace_seconds: float = 10, name: str = "the stack"
    ) -> None:
        self.cwd, self.log_dir = cwd, log_dir
        self.grace_seconds, self.name = grace_seconds, name
        self.children: list[Child] = []
        self.stopping = False  # once set, stop signals are ignored: stopping is under way
        self._deferring = False
        self._pending: int | None = None

    def run(self, start: Callable[[], None], cleanup: Callable[[], None] = lambda: None) -> int:
        """`start()`, then watch until a child exits or a stop signal arrives; then stop the
        children and `cleanup()`. Returns the exit status: 0 when a signal stopped it, 1
        when a child exited. Other errors propagate, after the same stopping."""
        self.handle_stop_signals()
        status = 0
        try:
            start()
            self.watch()
        except StopSignal as stop:
            print(f"stopping {self.name}: {stop} received", flush=True)
        except ChildExited as exited:
            print(f"{exited.report()}\nstopping {self.name}", file=sys.stderr, flush=True)
            status = 1
        finally:
            self.stopping = True
            self.stop()
            cleanup()
        print(f"{self.name} stopped", flush=True)
        return status

    def handle_stop_signals(self) -> None:
        for signum in STOP_SIGNALS:
            if signum == signal.SIGHUP and signal.getsignal(signum) == signal.SIG_IGN:
                continue  # started under nohup: it is meant to outlive the terminal
            signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping or self._pending is not None:
            return
        if self._deferring:
            self._pending = signum
            return
        self.stopping = True
        raise StopSignal(signum)

    @contextmanager
    def _deferred_signals(self) -> Iterator[None]:
        """A stop signal waits until the block is done (a child started is a child known)."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None and not self.stopping:
            self.stopping = True
            raise StopSignal(self._pending)

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Child:
        """Start `command` in its own process group, output appended to `log_dir/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{name}.log"
        with self._deferred_signals(), path.open("ab") as log:
            offset = log.tell()  # before the child shares (and moves) the file offset
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                process_group=0,
            )
            child = Child(name, process.pid, path, offset, process)
            self.children.append(child)
        return child

    def track(self, name: str, pid: int, log: Path | None = None, log_offset: int = 0) -> None:
        """Watch a process the supervisor did not start (not stopped by it either)."""
        self.children.append(Child(name, pid, log, log_offset))

    def check(self) -> None:
        """Raise ChildExited for the first child that is no longer running."""
        for child in self.children:
            status = child.exit_status()
            if status is not None:
                self.stopping = True
                raise ChildExited(child, status)

    def watch(self, interval: float = 1) -> NoReturn:
        while True:
            self.check()
            time.sleep(interval)

    def wait_for_port(self, port: int, seconds: float, host: str = "127.0.0.1") -> None:
        """Until something listens on the port; a child exiting meanwhile raises at once."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {seconds}s")
            time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM to each started child's process group, newest first; SIGKILL to whatever
        is left of them after the grace period. Waits for each child."""
        started = [(c, c.process) for c in reversed(self.children) if c.process is not None]
        running = [(c, process) for c, process in started if process.poll() is None]
        for child, _ in running:
            _signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        for child, process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            if process.poll() is None:
                print(
                    f"{child.name} (pid {child.pid}) still running {self.grace_seconds:g}s "
                    "after SIGTERM: killed",
                    file=sys.stderr,
                    flush=True,
                )
        for child, _ in started:  # the child still running, or what it started
            _signal_group(child.pid, signal.SIGKILL)
        for _, process in started:
            process.wait()


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)
