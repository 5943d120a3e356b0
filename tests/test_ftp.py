"""The FTP drop against Python's ftplib: logins, confinement, size limit, upload tracking."""

from __future__ import annotations

import asyncio
import ftplib
import io
import random

import asyncpg

from delivery.ftp import start_ftp
from delivery.paths import ftp_root, home_dirname
from schemas.settings import Ftp, Settings
from tests.support.delivery import (
    delivery_settings,
    ftp_session,
    ftp_try,
    ftp_upload,
    home,
    names,
    pdf_bytes,
    try_login,
)
from tests.support.servers import eventually


async def test_supplier_uploads_into_its_own_home(settings: Settings, pool: asyncpg.Pool,
                                                  dl_ftp, dl_supplier) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(200_000)
    answer = await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "论文 1.pdf", content)
    assert answer.startswith("226")
    stored = home(settings, symbol) / "论文 1.pdf"
    assert stored.read_bytes() == content
    assert stored.parent.name == home_dirname(symbol) and ":" not in stored.parent.name
    row = await pool.fetchrow(
        "SELECT state, size FROM ftp_upload WHERE supplier = $1 AND path = $2", symbol,
        "论文 1.pdf")
    assert (row["state"], row["size"]) == ("done", len(content))

    def look(ftp: ftplib.FTP) -> tuple[str, list[str]]:
        return ftp.pwd(), names(ftp)
    pwd, listed = await asyncio.to_thread(ftp_try, dl_ftp, symbol, password, look)
    assert pwd == "/"
    assert listed == ["论文 1.pdf"]


async def test_logins_are_agency_credentials_of_enabled_suppliers(
        pool: asyncpg.Pool, dl_ftp, dl_supplier, make_agency) -> None:
    symbol, password = dl_supplier
    requester, requester_password = await make_agency(roles=("requester",))

    assert await asyncio.to_thread(try_login, dl_ftp, symbol, password) == "ok"
    assert await asyncio.to_thread(try_login, dl_ftp, symbol, password + "x") == "530"
    assert await asyncio.to_thread(try_login, dl_ftp, "NOPE:NOBODY", password) == "530"
    # Requesters have no FTP home: the drop is for suppliers.
    assert await asyncio.to_thread(try_login, dl_ftp, requester, requester_password) == "530"
    await pool.execute("UPDATE agency SET enabled = false WHERE symbol = $1", symbol)
    assert await asyncio.to_thread(try_login, dl_ftp, symbol, password) == "530"


async def test_dotdot_and_absolute_paths_stay_in_the_home(settings: Settings, dl_ftp,
                                                          dl_supplier, make_agency) -> None:
    symbol, password = dl_supplier
    other, other_password = await make_agency(roles=("supplier",))
    secret = pdf_bytes(1000)
    await asyncio.to_thread(ftp_upload, dl_ftp, other, other_password, "secret.pdf", secret)
    other_home = home(settings, other)
    own_home = home(settings, symbol)

    def attempts(ftp: ftplib.FTP) -> dict[str, object]:
        out: dict[str, object] = {}
        ftp.cwd("..")
        ftp.cwd("../..")
        out["pwd"] = ftp.pwd()
        for label, path in {
            "dotdot": f"../{home_dirname(other)}/secret.pdf",
            "deep": f"../../../{home_dirname(other)}/secret.pdf",
            "real_absolute": str(other_home / "secret.pdf"),
            "etc": "/etc/passwd",
        }.items():
            try:
                ftp.retrbinary(f"RETR {path}", lambda _b: None)
                out[label] = "read"
            except ftplib.error_perm as exc:
                out[label] = str(exc)[:3]
        ftp.storbinary("STOR ../../escape.pdf", io.BytesIO(b"%PDF-1.4 x"))
        ftp.storbinary("STOR /absolute.pdf", io.BytesIO(b"%PDF-1.4 y"))
        try:
            ftp.cwd(f"/../{home_dirname(other)}")
            out["cwd_other"] = ftp.pwd()
        except ftplib.error_perm as exc:
            out["cwd_other"] = str(exc)[:3]
        out["listing"] = names(ftp, "/")
        return out

    out = await asyncio.to_thread(ftp_try, dl_ftp, symbol, password, attempts)
    assert out["pwd"] == "/"
    for label in ("dotdot", "deep", "real_absolute", "etc"):
        assert out[label] == "550", (label, out[label])
    assert out["cwd_other"] == "550"
    # `..` is clamped at the home's root and `/` is the home: both uploads landed inside.
    assert (own_home / "escape.pdf").exists() and (own_home / "absolute.pdf").exists()
    assert not (ftp_root(settings) / "escape.pdf").exists()
    assert not (ftp_root(settings).parent / "escape.pdf").exists()
    assert out["listing"] == ["absolute.pdf", "escape.pdf"]
    assert (other_home / "secret.pdf").read_bytes() == secret


async def test_symlinks_out_of_a_home_are_hidden_and_refused(settings: Settings, dl_ftp,
                                                             dl_supplier, make_agency,
                                                             tmp_path) -> None:
    symbol, password = dl_supplier
    other, other_password = await make_agency(roles=("supplier",))
    await asyncio.to_thread(ftp_upload, dl_ftp, other, other_password, "secret.pdf",
                            pdf_bytes(1000))
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "mine.pdf", pdf_bytes(1000))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    own = home(settings, symbol)
    (own / "to_other").symlink_to(home(settings, other), target_is_directory=True)
    (own / "to_outside").symlink_to(outside, target_is_directory=True)
    (own / "file_link.pdf").symlink_to(outside / "passwd")
    (own / "new_link.pdf").symlink_to(outside / "created.pdf")  # dangling, points outside

    def attempts(ftp: ftplib.FTP) -> dict[str, object]:
        out: dict[str, object] = {"listing": names(ftp)}
        for label, command in {
            "retr_file_link": "RETR file_link.pdf",
            "retr_via_dir": "RETR to_other/secret.pdf",
            "retr_outside": "RETR to_outside/passwd",
        }.items():
            try:
                ftp.retrbinary(command, lambda _b: None)
                out[label] = "read"
            except ftplib.error_perm as exc:
                out[label] = str(exc)[:3]
        for label, command in {"stor_dangling": "STOR new_link.pdf",
                               "stor_via_dir": "STOR to_outside/planted.pdf",
                               "stor_over_link": "STOR file_link.pdf"}.items():
            try:
                ftp.storbinary(command, io.BytesIO(b"%PDF-1.4 evil"))
                out[label] = "written"
            except (ftplib.error_perm, ftplib.error_temp) as exc:
                out[label] = str(exc)[:3]
        for label, directory in {"cwd_other": "to_other", "cwd_outside": "to_outside"}.items():
            try:
                ftp.cwd(directory)
                out[label] = "entered"
            except ftplib.error_perm as exc:
                out[label] = str(exc)[:3]
        for label, command in {"dele_link": "DELE file_link.pdf"}.items():
            try:
                ftp.sendcmd(command)
                out[label] = "deleted"
            except ftplib.error_perm as exc:
                out[label] = str(exc)[:3]
        return out

    out = await asyncio.to_thread(ftp_try, dl_ftp, symbol, password, attempts)
    assert out["listing"] == ["mine.pdf"]
    for label in ("retr_file_link", "retr_via_dir", "retr_outside", "cwd_other", "cwd_outside",
                  "dele_link"):
        assert out[label] == "550", (label, out[label])
    for label in ("stor_dangling", "stor_via_dir", "stor_over_link"):
        assert out[label] in ("550", "451"), (label, out[label])
    assert not (outside / "created.pdf").exists()
    assert not (outside / "planted.pdf").exists()
    assert (outside / "passwd").read_text() == "root:x:0:0"
    assert (own / "file_link.pdf").is_symlink()


async def test_upload_over_the_limit_is_aborted_and_removed(settings: Settings,
                                                            pool: asyncpg.Pool,
                                                            dl_supplier) -> None:
    symbol, password = dl_supplier
    drop = await start_ftp(delivery_settings(settings, ftp__max_upload_mb=1), pool)
    try:
        big = pdf_bytes(3 * 1024 * 1024)
        result = await asyncio.to_thread(
            ftp_try, drop, symbol, password,
            lambda ftp: ftp.storbinary("STOR big.pdf", io.BytesIO(big)))
        # ftplib either reads the 552 or finds its data connection closed under it.
        assert isinstance(result, ftplib.error_perm | OSError), result
        if isinstance(result, ftplib.error_perm):
            assert str(result).startswith("552")

        async def cleaned_up() -> bool:
            # The client may see its data connection drop before the server has tidied up.
            return not (home(settings, symbol) / "big.pdf").exists() and await pool.fetchval(
                "SELECT count(*) FROM ftp_upload WHERE supplier = $1 AND path = 'big.pdf'",
                symbol) == 0
        await eventually(cleaned_up)
        small = pdf_bytes(512 * 1024)
        assert (await asyncio.to_thread(ftp_upload, drop, symbol, password, "small.pdf",
                                        small)).startswith("226")
        assert (home(settings, symbol) / "small.pdf").read_bytes() == small
    finally:
        await drop.stop()


async def test_rename_and_delete_keep_the_upload_record(settings: Settings, pool: asyncpg.Pool,
                                                        dl_ftp, dl_supplier) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(10_000)

    def upload_then_rename(ftp: ftplib.FTP) -> None:
        ftp.mkd("2025")
        ftp.storbinary("STOR 2025/scan.tmp", io.BytesIO(content))
        ftp.rename("2025/scan.tmp", "2025/scan.pdf")
        ftp.storbinary("STOR gone.pdf", io.BytesIO(content))
        ftp.delete("gone.pdf")

    assert await asyncio.to_thread(ftp_try, dl_ftp, symbol, password, upload_then_rename) is None
    rows = await pool.fetch("SELECT path, state, size FROM ftp_upload WHERE supplier = $1",
                            symbol)
    assert [(r["path"], r["state"], r["size"]) for r in rows] == [
        ("2025/scan.pdf", "done", len(content))]


async def test_passive_ports_and_announced_address(settings: Settings, pool: asyncpg.Pool,
                                                   dl_supplier) -> None:
    symbol, password = dl_supplier
    first = random.randrange(40000, 48000)
    ports = f"{first}-{first + 19}"
    drop = await start_ftp(delivery_settings(settings, ftp__passive_ports=ports,
                                             ftp__announce_address="127.0.0.1"), pool)
    try:
        def pasv(ftp: ftplib.FTP) -> tuple[str, int]:
            reply = ftp.sendcmd("PASV")
            numbers = [int(n) for n in reply[reply.index("(") + 1:reply.index(")")].split(",")]
            return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]

        host, port = await asyncio.to_thread(ftp_try, drop, symbol, password, pasv)
        assert host == "127.0.0.1"
        assert first <= port <= first + 19
        content = pdf_bytes(5000)
        assert (await asyncio.to_thread(ftp_upload, drop, symbol, password, "p.pdf",
                                        content)).startswith("226")
    finally:
        await drop.stop()


def test_port_range_setting_is_validated() -> None:
    assert Ftp(passive_ports="50000-50002").data_ports() == range(50000, 50003)
    assert Ftp(passive_ports="").data_ports() is None
    for bad in ("50002-50000", "abc", "1-70000"):
        try:
            Ftp(passive_ports=bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


async def test_sessions_per_supplier_are_capped(settings: Settings, pool: asyncpg.Pool,
                                                dl_supplier) -> None:
    symbol, password = dl_supplier
    drop = await start_ftp(delivery_settings(settings, ftp__max_connections_per_supplier=1),
                           pool)
    try:
        first = await asyncio.to_thread(ftp_session, drop, symbol, password)
        assert await asyncio.to_thread(try_login, drop, symbol, password) == "530"
        await asyncio.to_thread(first.quit)

        async def freed() -> bool:
            return await asyncio.to_thread(try_login, drop, symbol, password) == "ok"
        await eventually(freed)
    finally:
        await drop.stop()
