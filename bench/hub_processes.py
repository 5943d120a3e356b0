"""Several `run.py hub` operating-system processes against one RabbitMQ and one PostgreSQL.

Each process gets its own FTP and HTTP ports (fixed for its slot, so a restarted
process serves where the killed one did) and shares the database, the broker
prefix and the data directory with the others. Used by the chaos harness
(bench/chaos.py) and tests/test_multi_hub.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# The hubs' connections carry these names, so that the harness can sever exactly them.
DB_APPLICATION = "illhub-chaos-hub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_query(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


class HubFailed(RuntimeError):
    """A hub process that exited or never became ready (the message has its log's end)."""


class HubProcesses:
    def __init__(self, settings: Settings, count: int, log_dir: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.count = count
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.ftp_ports = [free_port() for _ in range(count)]
        self.http_ports = [free_port() for _ in range(count)]
        self.procs: list[asyncio.subprocess.Process | None] = [None] * count
        # Whether each process has answered /readyz since it was started: a restarted
        # hub is alive seconds before its FTP and HTTP servers listen (imports, pools,
        # topology), and clients sent there meanwhile only meet refused connections.
        self.ready = [False] * count
        self._watching: set[asyncio.Task[None]] = set()
        self.kills = 0
        self.starts = 0

    def connection_name(self, i: int) -> str:
        return f"{self.settings.amqp.name_prefix}hub-{i}"

    def env(self, i: int) -> dict[str, str]:
        s = self.settings.updated(
            database__url=_with_query(self.settings.database_url, "application_name",
                                      DB_APPLICATION),
            amqp__url=_with_query(self.settings.amqp.url.get_secret_value(), "name",
                                  self.connection_name(i)),
            http__port=self.http_ports[i], ftp__port=self.ftp_ports[i],
            ftp__passive_ports="", smtp__security="none", outbox__poll_seconds=0.2)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ILLHUB_")}
        env.update(s.environment())
        env.update(self.extra_env)
        return env

    async def start(self, i: int) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The child writes to the file itself; opening it for append does not block.
        with open(self.log_dir / f"hub-{i}.log", "ab") as log:  # noqa: ASYNC230
            self.procs[i] = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "run.py"), "hub", cwd=ROOT, env=self.env(i),
                stdout=log, stderr=asyncio.subprocess.STDOUT)
        self.ready[i] = False
        self.starts += 1
        watch = asyncio.create_task(self._watch_ready(i))
        self._watching.add(watch)
        watch.add_done_callback(self._watching.discard)

    async def _watch_ready(self, i: int) -> None:
        with contextlib.suppress(HubFailed):
            await self.wait_ready(i)

    def serving(self, i: int) -> bool:
        """Alive and ready: its servers listen."""
        return self.alive(i) and self.ready[i]

    async def start_all(self, ready_timeout: float = 90.0) -> None:
        for i in range(self.count):
            await self.start(i)
        await asyncio.gather(*(self.wait_ready(i, ready_timeout) for i in range(self.count)))

    def alive(self, i: int) -> bool:
        p = self.procs[i]
        return p is not None and p.returncode is None

    async def wait_ready(self, i: int, timeout: float = 90.0) -> None:
        """Until the process answers /readyz (database and broker reachable)."""
        url = f"http://127.0.0.1:{self.http_ports[i]}/readyz"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
            while loop.time() < deadline:
                if not self.alive(i):
                    raise HubFailed(f"hub {i} exited with {self.procs[i].returncode}; the end "
                                    f"of its log:\n{self.log_tail(i, 15)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            self.ready[i] = True
                            return
                await asyncio.sleep(0.2)
        raise HubFailed(f"hub {i} not ready within {timeout:.0f} s; the end of its log:\n"
                        f"{self.log_tail(i, 15)}")

    async def kill(self, i: int) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crash or an OOM kill."""
        p = self.procs[i]
        if p is None or p.returncode is not None:
            return
        self.ready[i] = False
        p.send_signal(signal.SIGKILL)
        await p.wait()
        self.kills += 1

    async def stop_all(self, timeout: float = 30.0) -> list[int | None]:
        """SIGTERM every live process (graceful stop); SIGKILL what does not stop in time."""
        for watch in list(self._watching):
            watch.cancel()
        await asyncio.gather(*self._watching, return_exceptions=True)
        for p in self.procs:
            if p is not None and p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for p in self.procs:
            if p is None:
                codes.append(None)
                continue
            try:
                codes.append(await asyncio.wait_for(p.wait(), timeout))
            except TimeoutError:
                p.kill()
                codes.append(await p.wait())
        return codes

    def log_tail(self, i: int, lines: int = 40) -> str:
        path = self.log_dir / f"hub-{i}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
