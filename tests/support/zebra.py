"""A real SRU server for the catalogue tests: Index Data's Zebra (`zebrasrv`), loaded
by `zebraidx` with the MARCXML records of tests/data/marc/ (real Library of Congress
records with holdings and item fields added; see its README), in a temp directory,
once per test session.

The server answers SRU (and Z39.50) on one loopback port; CQL is mapped to Zebra's
Bib-1 indexes by YAZ's own standard map (/usr/share/yaz/etc/pqf.properties):
`bath.isbn`, `bath.issn`, `rec.id`, `dc.title`. Record schemas: `marcxml` (the record
as loaded) and `iso20775` (its holdings as ISO 20775). The fixture is named `zebra`;
tests/conftest.py marks every test using it `zebra`. Where Zebra is not installed
(`.ci/setup` installs it) those tests are skipped, saying so.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.servers import free_port

DATA = ROOT / "tests" / "data" / "marc"
RECORDS = DATA / "catalogue.xml"
START_SECONDS = 10.0


@dataclass(frozen=True)
class Zebra:
    url: str  # the SRU base URL, database included
    port: int


def _module_path() -> str:
    found = glob.glob("/usr/lib/*/idzebra-2.0/modules") + glob.glob("/usr/lib/idzebra-2.0/modules")
    return ":".join(found)


def _write_config(home: Path, port: int) -> Path:
    register = home / "register"
    register.mkdir()
    (home / "zebra.cfg").write_text(
        f"profilePath: {DATA / 'zebra'}:/usr/share/idzebra-2.0/tab\n"
        f"modulePath: {_module_path()}\n"
        f"recordtype: dom.{DATA / 'zebra' / 'dom-config.xml'}\n"
        "attset: bib1.att\nattset: explain.att\n"
        f"register: {register}:100M\nlockdir: {register}\nkeytmpdir: {register}\n"
        "storeData: 1\nencoding: utf-8\n", encoding="utf-8")
    server = home / "yazgfs.xml"
    server.write_text(f"""<yazgfs>
  <listen id="sru">tcp:127.0.0.1:{port}</listen>
  <server id="catalogue" listenref="sru">
    <directory>{home}</directory>
    <config>zebra.cfg</config>
    <cql2rpn>/usr/share/yaz/etc/pqf.properties</cql2rpn>
  </server>
</yazgfs>
""", encoding="utf-8")
    return server


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def zebra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zebra]:
    """zebrasrv on a free loopback port, the test records indexed."""
    if not (shutil.which("zebrasrv") and shutil.which("zebraidx")):
        pytest.skip("Index Data's Zebra (zebrasrv, zebraidx) is not installed; .ci/setup "
                    "installs it (apt: idzebra-2.0)")
    home = tmp_path_factory.mktemp("zebra")
    port = free_port()
    server = _write_config(home, port)
    log = home / "zebra.log"
    for step in (["init"], ["update", str(RECORDS)]):
        done = subprocess.run(["zebraidx", "-c", str(home / "zebra.cfg"), "-l", str(log),
                               *step], cwd=home, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"zebraidx {step[0]} failed: {log.read_text()}"
    process = subprocess.Popen(["zebrasrv", "-f", str(server), "-l", str(home / "srv.log")],
                               cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_SECONDS
        while not _listening(port):
            assert process.poll() is None, f"zebrasrv exited: {(home / 'srv.log').read_text()}"
            assert time.monotonic() < deadline, "zebrasrv did not listen in time"
            time.sleep(0.05)
        yield Zebra(url=f"http://127.0.0.1:{port}/Default", port=port)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
