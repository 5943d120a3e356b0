"""Every PostgreSQL advisory lock the hub takes, in one place, so no two jobs share a key.

Several hub processes run at once (ARCHITECTURE §5); these locks make a job run
once per tick across all of them, or serialise writers of one kind. Keys are
eight ASCII letters read as a big-endian integer, so `pg_locks` shows something a
person can recognise.
"""

from __future__ import annotations

from enum import IntEnum

from infra.database import Connection


class Lock(IntEnum):
    MIGRATE = 0x494C4C4855424D47  # "ILLHUBMG": concurrent `migrate` runs queue up
    OUTBOX_RELAY = 0x494C4C484F555452  # "ILLHOUTR": one relay publishes at a time
    PEER_RELAY = 0x494C4C4850454552  # "ILLHPEER": one ISO 18626 HTTP peer relay
    DEADLINE_SWEEP = 0x494C4C4853574550  # "ILLHSWEP": one deadline sweeper per tick
    RETENTION = 0x494C4C4844454C52  # "ILLHDELR": one retention sweep per tick
    SETTLEMENT = 0x494C4C4853455454  # "ILLHSETT": one settlement run at a time
    FEES = 0x494C4C4846454553  # "ILLHFEES": fee schedule loads one after another
    INTAKE_LAYOUT = 0x494C4C48494E544B  # "ILLHINTK": one hub changes the shard layout
    COUNTS = 0x494C4C48434E5453  # "ILLHCNTS": one hub folds counter changes per tick
    # Keyed (see `keyed_transaction_lock`): one lock per key of the kind.
    COPYRIGHT_COUNT = 0x494C4C4843505943  # "ILLHCPYC": one library's copies of one journal
    STATEMENT_DUE = 0x494C4C4844554553  # "ILLHDUES": one writer per statement due
    DISPUTE = 0x494C4C4844495350  # "ILLHDISP": one resolution per dispute
    DEPOSIT_ACCOUNT = 0x494C4C4844455041  # "ILLHDEPA": one writer per agency's deposit
    LOAN_CLAIM = 0x494C4C48434C4D54  # "ILLHCLMT": one claim opened per transaction
    CLAIM_STEP = 0x494C4C48434C4D53  # "ILLHCLMS": one step at a time per claim
    # Unkeyed:
    BANK_IMPORT = 0x494C4C4842414E4B  # "ILLHBANK": bank statement imports one at a time
    PAYMENT_FILE = 0x494C4C4850415946  # "ILLHPAYF": payment files one at a time


async def try_transaction_lock(conn: Connection, lock: Lock) -> bool:
    """Take `lock` until the caller's transaction ends, if no one holds it; never waits."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", int(lock)))


async def transaction_lock(conn: Connection, lock: Lock) -> None:
    """Take `lock` until the caller's transaction ends, waiting for it if need be."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", int(lock))


async def keyed_transaction_lock(conn: Connection, lock: Lock, key: str) -> None:
    """Take `lock` for one key (say, one library and journal) until the caller's
    transaction ends: writers of that key queue up, writers of other keys do not wait."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($2, $1))", int(lock),
                       key)


async def try_session_lock(conn: Connection, lock: Lock) -> bool:
    """Take `lock` for the session (until `unlock` or the connection closes)."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", int(lock)))


async def session_lock(conn: Connection, lock: Lock) -> None:
    await conn.execute("SELECT pg_advisory_lock($1)", int(lock))


async def unlock(conn: Connection, lock: Lock) -> None:
    await conn.execute("SELECT pg_advisory_unlock($1)", int(lock))
