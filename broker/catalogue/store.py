"""supplier_catalogue (migration 0027), written and read by `run.py agency catalogue`."""

from __future__ import annotations

import json

import asyncpg

from broker.catalogue.config import CatalogueConfig, CatalogueError

_COLUMNS = ("symbol, sru_url, sru_version, record_schema, reader, item_field, "
            "available_values, indexes, budget_ms, enabled")

PUT = f"""
INSERT INTO supplier_catalogue ({_COLUMNS})
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
ON CONFLICT (symbol) DO UPDATE SET
    sru_url = excluded.sru_url, sru_version = excluded.sru_version,
    record_schema = excluded.record_schema, reader = excluded.reader,
    item_field = excluded.item_field, available_values = excluded.available_values,
    indexes = excluded.indexes, budget_ms = excluded.budget_ms, enabled = excluded.enabled,
    updated_at = now()"""
GET = f"SELECT {_COLUMNS} FROM supplier_catalogue WHERE symbol = $1"
ALL = f"SELECT {_COLUMNS} FROM supplier_catalogue ORDER BY symbol"
REMOVE = "DELETE FROM supplier_catalogue WHERE symbol = $1 RETURNING symbol"
IS_SUPPLIER = "SELECT 'supplier' = ANY(roles) FROM agency WHERE symbol = $1"


async def put(pool: asyncpg.Pool, c: CatalogueConfig) -> None:
    async with pool.acquire() as conn, conn.transaction():
        supplier = await conn.fetchval(IS_SUPPLIER, c.symbol)
        if supplier is None:
            raise CatalogueError(f"no agency {c.symbol} (add it with `run.py agency add`)")
        if not supplier:
            raise CatalogueError(f"{c.symbol} is not a supplier: only suppliers' catalogues "
                                 "are asked before routing")
        await conn.execute(PUT, c.symbol, c.sru_url, c.sru_version, c.record_schema,
                           str(c.reader), c.item_field, list(c.available_values),
                           json.dumps(dict(c.indexes)), c.budget_ms, c.enabled)


async def get(pool: asyncpg.Pool, symbol: str) -> CatalogueConfig | None:
    row = await pool.fetchrow(GET, symbol)
    return CatalogueConfig.from_row(row) if row is not None else None


async def listing(pool: asyncpg.Pool) -> list[CatalogueConfig]:
    return [CatalogueConfig.from_row(r) for r in await pool.fetch(ALL)]


async def remove(pool: asyncpg.Pool, symbol: str) -> bool:
    return await pool.fetchval(REMOVE, symbol) is not None
