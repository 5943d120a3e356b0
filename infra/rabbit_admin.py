"""The RabbitMQ management HTTP API: vhosts, users and permissions for agencies."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiohttp


@dataclass(frozen=True)
class Consumer:
    queue: str
    tag: str
    # The queue's single active consumer (the others wait their turn).
    active: bool


class ManagementError(RuntimeError):
    pass


class Management:
    """A small client for the few management endpoints the hub needs."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}{parts.path or '/'}"
        self._base = self._base.rstrip("/") + "/api"
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Management:
        self._session = aiohttp.ClientSession(headers={"Authorization": self._auth},
                                              timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._session:
            await self._session.close()

    async def _call(self, method: str, path: str, body: Any = None,
                    ok: tuple[int, ...] = (200, 201, 204)) -> Any:
        if self._session is None:
            raise RuntimeError("use `async with Management(url)`")
        try:
            async with self._session.request(method, self._base + path, json=body) as resp:
                if resp.status not in ok:
                    text = await resp.text()
                    raise ManagementError(f"{method} {path}: HTTP {resp.status}: {text[:300]}")
                if resp.status == 200 and resp.content_type == "application/json":
                    return await resp.json()
                return None
        except aiohttp.ClientConnectionError as exc:
            raise ManagementError(
                f"RabbitMQ management API unreachable at {self._base} ({exc}); "
                "is the rabbitmq_management plugin enabled?"
            ) from exc

    @staticmethod
    def _q(name: str) -> str:
        return quote(name, safe="")

    async def put_vhost(self, vhost: str) -> None:
        await self._call("PUT", f"/vhosts/{self._q(vhost)}")

    async def delete_vhost(self, vhost: str) -> None:
        await self._call("DELETE", f"/vhosts/{self._q(vhost)}", ok=(204, 404))

    async def put_user(self, user: str, password: str, tags: str = "") -> None:
        await self._call("PUT", f"/users/{self._q(user)}", {"password": password, "tags": tags})

    async def get_user(self, user: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] | None = await self._call("GET", f"/users/{self._q(user)}")
            return found  # the API's JSON object for the user
        except ManagementError as exc:
            if "HTTP 404" in str(exc):
                return None
            raise

    async def delete_user(self, user: str) -> None:
        await self._call("DELETE", f"/users/{self._q(user)}", ok=(204, 404))

    async def set_permissions(self, vhost: str, user: str, *, configure: str, write: str,
                              read: str) -> None:
        await self._call("PUT", f"/permissions/{self._q(vhost)}/{self._q(user)}",
                         {"configure": configure, "write": write, "read": read})

    async def clear_permissions(self, vhost: str, user: str) -> None:
        await self._call("DELETE", f"/permissions/{self._q(vhost)}/{self._q(user)}",
                         ok=(204, 404))

    async def close_connections_of(self, user: str) -> None:
        conns = await self._call("GET", "/connections") or []
        for c in conns:
            if c.get("user") == user:
                await self._call("DELETE", f"/connections/{self._q(c['name'])}", ok=(204, 404))

    async def connections(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/connections?columns=name,user,vhost,client_properties"
                                ) or []

    async def close_connection(self, name: str) -> None:
        await self._call("DELETE", f"/connections/{self._q(name)}", ok=(204, 404))

    async def remove_scratch(self, vhost: str, prefix: str, users: list[str]) -> None:
        """Delete a scratch run's broker users and its prefixed queues and exchanges.

        A scratch run always has a prefix of its own: an empty one would match every
        queue and exchange of the vhost, so it is refused."""
        if not prefix:
            raise ValueError("remove_scratch needs the scratch run's own name prefix; an "
                             "empty prefix would delete everything in the vhost")
        for user in users:
            await self.delete_user(user)
        for queue in await self.queue_names(vhost):
            if queue.startswith(prefix):
                await self.delete_queue(vhost, queue)
        for exchange in await self.exchange_names(vhost):
            if exchange.startswith(prefix):
                await self.delete_exchange(vhost, exchange)

    async def queues(self, vhost: str) -> list[dict[str, Any]]:
        return await self._call(
            "GET", f"/queues/{self._q(vhost)}?columns=name,consumers,idle_since") or []

    async def queue_names(self, vhost: str) -> list[str]:
        rows = await self._call("GET", f"/queues/{self._q(vhost)}?columns=name") or []
        return [r["name"] for r in rows]

    async def delete_queue(self, vhost: str, name: str) -> None:
        await self._call("DELETE", f"/queues/{self._q(vhost)}/{self._q(name)}", ok=(204, 404))

    async def exchange_names(self, vhost: str) -> list[str]:
        rows = await self._call("GET", f"/exchanges/{self._q(vhost)}?columns=name") or []
        return [r["name"] for r in rows]

    async def delete_exchange(self, vhost: str, name: str) -> None:
        await self._call("DELETE", f"/exchanges/{self._q(vhost)}/{self._q(name)}",
                         ok=(204, 404))

    async def consumers(self, vhost: str) -> list[Consumer]:
        """Every consumer in the vhost, with whether it is a queue's single active one."""
        rows = await self._call("GET", f"/consumers/{self._q(vhost)}") or []
        return [Consumer(queue=r["queue"]["name"], tag=r["consumer_tag"],
                         active=r.get("activity_status") == "single_active")
                for r in rows if isinstance(r.get("queue"), dict)]

    async def users(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/users") or []
