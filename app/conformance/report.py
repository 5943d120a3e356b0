"""How a conformance check reads: each step as text while it runs, the summary, and the
report file a library sends to the centre (Markdown, or JSON for machines).

The verdict lines are the same everywhere: `element: problem (RULE, source)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.conformance.rules import RULES, Level, Verdict
from app.conformance.session import Outcome, StepResult

if TYPE_CHECKING:  # the runner imports this module; its Report is only a type here
    from app.conformance.runner import Report

INDENT = "       "


def verdict_text(verdict: Verdict) -> str:
    return f"{verdict.level}  {verdict.line}"


def step_lines(step: StepResult) -> list[str]:
    """A step as printed: outcome and title, what went each way, the verdicts."""
    lines = [f"[{step.outcome}] peer as {step.title}"]
    for exchange in step.exchanges:
        lines.append(f"{INDENT}{exchange.direction:<9} {exchange.summary}")
    lines += [f"{INDENT}{verdict_text(v)}" for v in step.verdicts]
    lines += [f"{INDENT}note: {n}" for n in step.notes]
    if step.not_run:
        lines.append(f"{INDENT}not run: {step.not_run}")
    return lines


def _counts(report: Report) -> dict[str, int]:
    verdicts = [v for s in report.steps for v in s.verdicts]
    return {"steps": len(report.steps),
            "passed": sum(s.outcome is Outcome.PASS for s in report.steps),
            "failed": sum(s.outcome is Outcome.FAIL for s in report.steps),
            "not_run": sum(s.outcome is Outcome.NOT_RUN for s in report.steps),
            "deviations": sum(v.level is Level.FAIL for v in verdicts),
            "warnings": sum(v.level is Level.WARN for v in verdicts)}


def _broken(report: Report) -> list[str]:
    codes = {v.rule.code for s in report.steps for v in s.verdicts if v.level is Level.FAIL}
    return [f"{r.code} ({r.source}): {r.text}" for r in RULES if r.code in codes]


def summary_lines(report: Report) -> list[str]:
    c = _counts(report)
    lines = ["", f"{report.target.symbol}: {c['steps']} steps: {c['passed']} passed, "
                 f"{c['failed']} failed, {c['not_run']} not run; {c['deviations']} "
                 f"deviation(s), {c['warnings']} warning(s)"]
    broken = _broken(report)
    if broken:
        lines.append("rules broken:")
        lines += [f"  {b}" for b in broken]
    lines.append(f"result: {report.result} (exit {report.exit_code})")
    return lines


def failures(report: Report) -> list[str]:
    """Every deviation as `role · flow · step: line`, in order (for tests and summaries)."""
    return [f"{s.title}: {v.line}" for s in report.steps for v in s.verdicts
            if v.level is Level.FAIL]


def as_json(report: Report) -> dict[str, Any]:
    return {
        "peer": {"symbol": report.target.symbol, "url": report.target.url,
                 "iso18626_version": report.target.version},
        "hub": report.options.hub_symbol, "checked_as": list(report.roles),
        "check_plays": report.options.partner, "listen_url": report.listen_url,
        "started": report.started.isoformat(),
        "finished": report.finished.isoformat() if report.finished else None,
        "result": report.result, "exit_code": report.exit_code, "summary": _counts(report),
        "steps": [{"role": s.role, "flow": s.flow, "step": s.name, "outcome": str(s.outcome),
                   "not_run": s.not_run, "notes": s.notes,
                   "exchanges": [{"direction": e.direction, "summary": e.summary,
                                  "document": e.document} for e in s.exchanges],
                   "verdicts": [{"level": str(v.level), "element": v.element,
                                 "problem": v.problem, "rule": v.rule.code, "line": v.line}
                                for v in s.verdicts]}
                  for s in report.steps],
        "rules": {r.code: {"source": r.source, "text": r.text} for r in RULES},
    }


def as_markdown(report: Report) -> str:
    c = _counts(report)
    out = [f"# ISO 18626 conformance report: {report.target.symbol}", "",
           "| | |", "|---|---|",
           f"| peer | {report.target.symbol} |", f"| endpoint | {report.target.url} |",
           f"| ISO 18626 version | {report.target.version} |",
           f"| checked as | {', '.join(report.roles)} |",
           f"| hub | {report.options.hub_symbol} (the check played {report.options.partner}) |",
           f"| run | {report.started:%Y-%m-%d %H:%M:%S %Z} |",
           f"| result | **{report.result}** (exit {report.exit_code}): {c['passed']} of "
           f"{c['steps']} steps passed, {c['deviations']} deviation(s), {c['warnings']} "
           "warning(s) |", "", "## Steps", "", "| peer as | flow | step | outcome | "
           "deviations |", "|---|---|---|---|---|"]
    for s in report.steps:
        out.append(f"| {s.role} | {s.flow} | {s.name} | {s.outcome} | "
                   f"{sum(v.level is Level.FAIL for v in s.verdicts)} |")
    found = [(s, v) for s in report.steps for v in s.verdicts]
    if found:
        out += ["", "## Deviations and warnings", ""]
        out += [f"- **{v.level}** {s.title}: `{v.line}`" for s, v in found]
    out += ["", "## What was sent and received", ""]
    for s in report.steps:
        out += _markdown_step(s)
    out += ["## Rules", "", "| rule | source | what it says |", "|---|---|---|"]
    out += [f"| {r.code} | {r.source} | {r.text} |" for r in RULES]
    return "\n".join(out) + "\n"


def _markdown_step(step: StepResult) -> list[str]:
    out = [f"### {step.title}: {step.outcome}", ""]
    for e in step.exchanges:
        out.append(f"- {e.direction}: {e.summary}")
        if e.document:
            out += ["", "  <details><summary>document</summary>", "", "  ```xml",
                    *[f"  {line}" for line in e.document.strip().splitlines()], "  ```", "",
                    "  </details>", ""]
    out += [f"- **{v.level}** `{v.line}`" for v in step.verdicts]
    out += [f"- note: {n}" for n in step.notes]
    if step.not_run:
        out.append(f"- not run: {step.not_run}")
    return [*out, ""]


def write_report(report: Report, path: Path) -> None:
    """JSON for a `.json` file name, Markdown otherwise."""
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(as_json(report), ensure_ascii=False, indent=2) + "\n",
                        "utf-8")
    else:
        path.write_text(as_markdown(report), "utf-8")
