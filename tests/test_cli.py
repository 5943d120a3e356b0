"""run.py as a user meets it: help, config, schemas, agency add/list/disable, errors."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from schemas.settings import Settings
from tests.conftest import agency_symbol
from tests.test_hub_process import ROOT, hub_env


async def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), *args, cwd=ROOT, env=hub_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_help_lists_the_commands(settings: Settings) -> None:
    code, out, _ = await run(settings, "--help")
    assert code == 0
    for command in ("hub", "migrate", "topology", "agency", "schemas", "config"):
        assert command in out


async def test_config_masks_secrets(settings: Settings) -> None:
    code, out, _ = await run(settings, "config")
    assert code == 0
    shown = json.loads(out)
    assert shown["name_prefix"] == settings.name_prefix
    assert ":guest@" not in shown["amqp_url"] and "****" in shown["amqp_url"]


async def test_schemas_command_writes_the_contract(settings: Settings, tmp_path: Path) -> None:
    code, _, _ = await run(settings, "schemas", str(tmp_path))
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())  # noqa: ASYNC240
    assert "asyncapi.json" in names and "request.schema.json" in names
    assert len(names) == 7
    doc = json.loads((tmp_path / "asyncapi.json").read_text("utf-8"))
    assert doc["asyncapi"] == "3.0.0"


async def test_agency_lifecycle_through_the_cli(settings: Settings) -> None:
    symbol = agency_symbol()
    add = ("agency", "add", symbol, "--name", "上海图书馆", "--roles", "requester,supplier",
           "--region", "上海/上海", "--email", "ill@library.sh.cn",
           "--finance-email", "finance@library.sh.cn", "--password", "correct horse")
    code, out, err = await run(settings, *add)
    assert code == 0, err
    code, out, err = await run(settings, *add)
    assert code == 1 and "already exists" in err
    code, out, _ = await run(settings, "agency", "list")
    line = next(x for x in out.splitlines() if x.startswith(symbol))
    assert "上海图书馆" in line and "上海/上海" in line and "enabled" in line
    code, _, err = await run(settings, "agency", "disable", symbol)
    assert code == 0, err
    code, out, _ = await run(settings, "agency", "list")
    assert "DISABLED" in next(x for x in out.splitlines() if x.startswith(symbol))


async def test_bad_input_gets_an_error_and_exit_code(settings: Settings) -> None:
    code, _, err = await run(settings, "agency", "add", "nocolon", "--name", "x",
                             "--roles", "requester", "--password", "longenough")
    assert code == 1 and "SCHEME:VALUE" in err
    code, _, err = await run(settings, "agency", "disable", agency_symbol("NOPE"))
    assert code == 1 and "no agency" in err
    code, _, err = await run(settings, "agency")
    assert code == 2  # argparse usage error
