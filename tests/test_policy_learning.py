"""Issue 18 in the ranking: a doubted holding and a catalogue's 'not available' move a
candidate after the others (with the reason), a catalogue's 'available' and holdings
accuracy change the score, a named supplier keeps its place, and a last resort stays
inside the request's maximum cost."""

from __future__ import annotations

import dataclasses
import datetime

from broker.policy import TIER_LAST, Availability, Policy, RequestFacts, SupplierFacts

DAY = datetime.date(2026, 9, 16)


def req(*, named: str | None = None, max_cost: int | None = 5000) -> RequestFacts:
    return RequestFacts(requester="CALIS:LZU", province="甘肃", city="兰州",
                        service_type="Copy", service_kind="DocumentDelivery",
                        id_types=frozenset({"isbn"}), max_cost_minor=max_cost,
                        named_supplier=named, today=DAY)


def sup(symbol: str, province: str = "甘肃", city: str = "兰州", *, holds: bool = True,
        quote: int | None = 1000, **learned: object) -> SupplierFacts:
    base = SupplierFacts(symbol=symbol, province=province, city=city,
                         holds=frozenset({"isbn"}) if holds else frozenset(),
                         quote_minor=quote, fill_rate=0.9, turnaround_hours=24.0,
                         open_requests=0, forwarded_today=0)
    return dataclasses.replace(base, **learned)  # type: ignore[arg-type]


def order(policy: Policy, request: RequestFacts, *suppliers: SupplierFacts) -> list[str]:
    return [r.symbol for r in policy.rota(request, list(suppliers)).ranked]


def reasons(policy: Policy, request: RequestFacts, symbol: str,
            *suppliers: SupplierFacts) -> tuple[str, ...]:
    return next(r for r in policy.rota(request, list(suppliers)).ranked
                if r.symbol == symbol).reasons


def test_a_doubted_holding_is_asked_after_the_others() -> None:
    p = Policy.default()
    local = sup("CALIS:LZU2", doubted="answered NotHeld for isbn 9787101003048 on 2026-09-01")
    far = sup("CALIS:PKU", "北京", "北京")
    assert order(p, req(), local, far) == ["CALIS:PKU", "CALIS:LZU2"]
    ranked = {r.symbol: r for r in p.rota(req(), [local, far]).ranked}
    assert ranked["CALIS:LZU2"].tier == TIER_LAST
    assert any("answered NotHeld for isbn 9787101003048" in x
               for x in ranked["CALIS:LZU2"].reasons)
    # Without the doubt the local library comes first.
    assert order(p, req(), dataclasses.replace(local, doubted=None), far)[0] == "CALIS:LZU2"


def test_not_available_moves_last_with_its_reason_and_never_excludes() -> None:
    p = Policy.default()
    checked = Availability(False, "checked: not available (all 2 items on loan)")
    local = sup("CALIS:LZU2", availability=checked)
    far = sup("CALIS:PKU", "北京", "北京")
    rota = p.rota(req(), [local, far])
    assert [r.symbol for r in rota.ranked] == ["CALIS:PKU", "CALIS:LZU2"]
    assert rota.excluded == ()
    assert "checked: not available (all 2 items on loan)" in " ".join(
        reasons(p, req(), "CALIS:LZU2", local, far))


def test_available_lifts_and_no_answer_only_explains() -> None:
    p = Policy.default()
    a, b = sup("CALIS:LZU2"), sup("CALIS:LZU3")
    assert order(p, req(), a, b) == ["CALIS:LZU2", "CALIS:LZU3"]       # tie: by symbol
    on_shelf = dataclasses.replace(b, availability=Availability(True, "checked: available"))
    assert order(p, req(), a, on_shelf) == ["CALIS:LZU3", "CALIS:LZU2"]
    silent = dataclasses.replace(b, availability=Availability(None, "no answer within 300 ms"))
    assert order(p, req(), a, silent) == ["CALIS:LZU2", "CALIS:LZU3"]
    assert "no answer within 300 ms" in reasons(p, req(), "CALIS:LZU3", a, silent)


def test_holdings_accuracy_costs_score() -> None:
    p = Policy.default()
    good, sloppy = sup("CALIS:LZU3", holdings_accuracy=1.0), sup("CALIS:LZU2",
                                                                 holdings_accuracy=0.4)
    assert order(p, req(), sloppy, good) == ["CALIS:LZU3", "CALIS:LZU2"]
    card = reasons(p, req(), "CALIS:LZU2", sloppy, good)
    assert "holdings accuracy 0.40" in card
    assert any("- holdings 0.300" in x for x in card)


def test_the_named_supplier_keeps_its_place_even_doubted() -> None:
    p = Policy.default()
    named = sup("CALIS:LZU2", doubted="answered NotHeld", availability=Availability(
        False, "checked: not available"))
    other = sup("CALIS:LZU3")
    assert order(p, req(named="CALIS:LZU2"), named, other)[0] == "CALIS:LZU2"


def test_last_resort_stays_inside_the_maximum_cost() -> None:
    p = Policy.from_toml('[[rule]]\nname = "按需出版 print on demand"\n'
                         'last_resort = ["VENDOR:POD"]\n')
    pod = sup("VENDOR:POD", "上海", "上海", holds=False, quote=4000)
    held = sup("CALIS:PKU", "北京", "北京")
    rota = p.rota(req(max_cost=5000), [held, pod])
    assert [r.symbol for r in rota.ranked] == ["CALIS:PKU", "VENDOR:POD"]
    assert rota.ranked[-1].reasons[0] == "last resort (rule '按需出版 print on demand')"
    dear = p.rota(req(max_cost=3000), [held, pod])
    assert [r.symbol for r in dear.ranked] == ["CALIS:PKU"]
    assert "above maximumCosts" in (dear.excluded_reason("VENDOR:POD") or "")


def test_scoring_knobs_are_read_from_the_policy_file() -> None:
    p = Policy.from_toml("[scoring]\nholdings_weight = 1.5\navailability_bonus = 0.0\n")
    assert (p.scoring.holdings_weight, p.scoring.availability_bonus) == (1.5, 0.0)
