"""Topology and agencies against the real broker, as real agency users."""

from __future__ import annotations

import aio_pika
import aiormq
import asyncpg
import pytest

from broker.agencies import AgencyError, NewAgency, add, disable
from broker.shards import declare_hub_topology
from infra import topology
from infra.rabbit_admin import Management
from schemas.settings import Settings
from tests.support.names import agency_symbol


async def test_declaring_the_production_topology_twice_changes_nothing(
        settings: Settings, pool: asyncpg.Pool) -> None:
    settings = settings.updated(amqp__queue_type="quorum")  # as in production
    first = await declare_hub_topology(settings, pool)
    again = await declare_hub_topology(settings, pool)  # same arguments: no PRECONDITION_FAILED
    assert first == again and first.shards == settings.intake.shards
    async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
        q = await mgmt._call("GET", f"/queues/{mgmt._q(settings.vhost)}/"
                                    f"{mgmt._q(settings.name(first.queues()[0]))}")
    assert q["arguments"]["x-queue-type"] == "quorum"
    assert q["arguments"]["x-single-active-consumer"] is True
    assert q["arguments"]["x-delivery-limit"] == topology.DELIVERY_LIMIT
    assert q["arguments"]["x-dead-letter-exchange"] == settings.name("ill.dead")
    assert q["durable"] is True


async def test_agency_reads_only_its_own_queue(settings: Settings, pool: asyncpg.Pool,
                                               make_agency, broker_refusals) -> None:
    await declare_hub_topology(settings, pool)
    alice, alice_pw = await make_agency()
    bob, _ = await make_agency()
    conn = await aio_pika.connect(settings.amqp_url_for(alice, alice_pw))
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(settings.name("ill.inbound"), ensure=False)
        await exchange.publish(aio_pika.Message(b"{}", user_id=alice), routing_key="request")
        own = await ch.get_queue(settings.name(f"agency.{alice}"), ensure=False)
        assert await own.get(fail=False) is None  # allowed, just empty

        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            other = await ch.get_queue(settings.name(f"agency.{bob}"), ensure=False)
            await other.get(fail=False)

        ch2 = await conn.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            outbound = await ch2.get_exchange(settings.name("ill.outbound"), ensure=False)
            await outbound.publish(aio_pika.Message(b"{}"), routing_key=bob)

        ch3 = await conn.channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await ch3.declare_queue(settings.name("sneaky"), durable=True)


async def test_spoofed_user_id_is_refused_by_the_broker(settings: Settings, pool: asyncpg.Pool,
                                                       make_agency, broker_refusals) -> None:
    await declare_hub_topology(settings, pool)
    alice, pw = await make_agency()
    conn = await aio_pika.connect(settings.amqp_url_for(alice, pw))
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(settings.name("ill.inbound"), ensure=False)
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await exchange.publish(aio_pika.Message(b"{}", user_id="CALIS:999999"),
                                   routing_key="request")


async def test_adding_an_agency_twice_is_a_clear_error(
        settings: Settings, pool, make_agency) -> None:
    symbol, _ = await make_agency()
    with pytest.raises(AgencyError, match="already exists"):
        await add(settings, pool, NewAgency(symbol=symbol, name="again", roles=("requester",),
                                            password="longenough"))
    assert await pool.fetchval("SELECT count(*) FROM agency WHERE symbol = $1", symbol) == 1


@pytest.mark.parametrize(("field", "value", "message"), [
    ("symbol", "no-colon", "SCHEME:VALUE"),
    ("roles", ("lender",), "--roles"),
    ("password", "short", "at least 8"),
    ("email", "not-an-address", "not an e-mail"),
])
async def test_bad_agency_input_is_refused_with_what_is_wrong(
        settings: Settings, pool, field, value, message) -> None:
    fields = {"symbol": agency_symbol(), "name": "图书馆", "roles": ("requester",),
              "password": "longenough", "email": None}
    fields[field] = value
    with pytest.raises(AgencyError, match=message):
        await add(settings, pool, NewAgency(**fields))
    async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
        if field != "symbol":
            assert await mgmt.get_user(fields["symbol"]) is None


async def test_disable_revokes_access_keeps_history(settings: Settings, pool, make_agency,
                                                    broker_refusals) -> None:
    symbol, pw = await make_agency()
    await disable(settings, pool, symbol)
    row = await pool.fetchrow("SELECT enabled, disabled_at FROM agency WHERE symbol=$1", symbol)
    assert row["enabled"] is False and row["disabled_at"] is not None
    with pytest.raises(Exception):  # noqa: B017 - refused at connection open
        conn = await aio_pika.connect(settings.amqp_url_for(symbol, pw))
        async with conn:
            ch = await conn.channel(publisher_confirms=True)
            ex = await ch.get_exchange(settings.name("ill.inbound"), ensure=False)
            await ex.publish(aio_pika.Message(b"{}", user_id=symbol), routing_key="request")
