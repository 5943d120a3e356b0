"""The five ways of ranking the lab compares, each a real `Policy` (broker/policy.py)."""

from __future__ import annotations

from broker.policy import Policy
from sim.routing_lab.replay import Configuration
from sim.routing_lab.world import VENDOR

# Tier order only: every scoring weight 0, so within a tier the symbol decides.
STATIC_SCORING = """
[scoring]
fill_weight = 0.0
speed_weight = 0.0
load_weight = 0.0
cost_weight = 0.0
holdings_weight = 0.0
availability_bonus = 0.0
"""

# The lender of last resort: the pay-per-view vendor after every ranked candidate, for
# copies (the vendor sells articles, not loans); maximumCosts still applies.
LAST_RESORT_RULE = f"""
[[rule]]
name = "pay-per-view last resort"
when = {{ service_kind = ["DocumentDelivery"] }}
last_resort = ["{VENDOR}"]
"""

NAMES = ("static tier order", "scorecard ranking", "+ holdings learning",
         "+ availability checks", "+ last resort")


def configurations(rules: str = "", vendor: str = VENDOR) -> list[Configuration]:
    """The five configurations; `rules` (TOML `[[rule]]` tables) is added to every policy,
    as a consortium's own rules would be."""
    last = LAST_RESORT_RULE.replace(VENDOR, vendor)
    static = Policy.from_toml(f'version = "lab-static"\n{STATIC_SCORING}\n{rules}')
    ranked = Policy.from_toml(f'version = "lab-ranked"\n{rules}')
    full = Policy.from_toml(f'version = "lab-last-resort"\n{rules}\n{last}')
    return [
        Configuration(NAMES[0], static),
        Configuration(NAMES[1], ranked, scorecards=True),
        Configuration(NAMES[2], ranked, scorecards=True, holdings=True),
        Configuration(NAMES[3], ranked, scorecards=True, holdings=True, availability=True),
        Configuration(NAMES[4], full, scorecards=True, holdings=True, availability=True),
    ]
