"""run.py as a user meets it: help, config, schemas, agency add/list/disable, errors."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.settings import Settings
from tests.support.cli import run
from tests.support.names import agency_symbol
from tests.support.paths import DOCS


async def test_help_lists_the_commands(settings: Settings) -> None:
    code, out, _ = await run(settings, "--help")
    assert code == 0
    for command in ("hub", "migrate", "topology", "agency", "schemas", "config"):
        assert command in out


async def test_config_masks_secrets(settings: Settings) -> None:
    code, out, _ = await run(settings, "config")
    assert code == 0
    shown = json.loads(out)
    assert shown["amqp"]["name_prefix"] == settings.amqp.name_prefix
    assert ":guest@" not in shown["amqp"]["url"] and "****" in shown["amqp"]["url"]
    assert shown["intake"]["shards"] == settings.intake.shards


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


async def test_holdings_import_keeps_good_lines_and_names_the_bad_one(
        settings: Settings, make_agency, tmp_path: Path, pool) -> None:
    symbol, _ = await make_agency(roles=("supplier",))
    csv = tmp_path / "holdings.csv"
    csv.write_text("\ufeffsymbol,id_type,id_value\n"
                   f"{symbol},issn,0317-8471\n"
                   f"{symbol},isbn,7-5013-1234-X\n"
                   f"{symbol},issn,1234-5678\n"        # bad check digit: line 4
                   f"{symbol},title_key,中国图书馆学报\n", encoding="utf-8")
    code, out, err = await run(settings, "holdings", "import", str(csv))
    assert code == 1  # good lines imported, one rejected
    assert "line 4" in out + err
    held = await pool.fetch("SELECT id_type, id_value FROM holding WHERE symbol = $1", symbol)
    assert {r["id_type"] for r in held} == {"issn", "title_key"} or len(held) >= 2
    code, _, err = await run(settings, "holdings", "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "missing.csv" in err


async def test_policy_load_names_a_bad_rule_and_show_prints_the_loaded_one(
        settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nname = "PPV"\nwhen = { service_kind = ["PayPerVeiw"] }\n'
                   'include = ["VENDOR:X"]\n', encoding="utf-8")
    code, _, err = await run(settings, "policy", "load", str(bad))
    assert code == 1 and "rule[1] 'PPV'" in err and "PayPerVeiw" in err
    good = tmp_path / "good.toml"
    good.write_text('version = "cli-test"\n[[rule]]\nname = "国家图书馆优先"\n'
                    'prefer = ["NLC:CN"]\n', encoding="utf-8")
    code, out, err = await run(settings, "policy", "load", str(good))
    assert code == 0, err
    code, out, _ = await run(settings, "policy", "show")
    assert code == 0 and "国家图书馆优先" in out
    code, _, err = await run(settings, "policy", "load",
                             str(DOCS / "policy.example.toml"))
    assert code == 0, err  # the documented example is a valid policy
    reset = tmp_path / "reset.toml"
    reset.write_text('version = "no rules"\n', encoding="utf-8")
    assert (await run(settings, "policy", "load", str(reset)))[0] == 0


async def test_explain_of_an_unknown_transaction_is_an_error(settings: Settings) -> None:
    code, _, err = await run(settings, "explain", "ILL-00000000-NOPE")
    assert code == 1 and "no transaction ILL-00000000-NOPE" in err


async def test_settle_dry_run_previews_and_a_bad_period_is_an_error(settings: Settings) -> None:
    code, out, err = await run(settings, "settle", "--period", "current", "--dry-run")
    assert code == 0, err
    assert "dry run" in (out + err).lower() or "preview" in (out + err).lower()
    code, _, err = await run(settings, "settle", "--period", "2026-13")
    assert code == 1 and "2026-13" in err
