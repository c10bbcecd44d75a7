"""The results file (JSON) and its Markdown table of figures and ratios."""

from __future__ import annotations

from typing import Any


def ratios(row: dict[str, Any]) -> dict[str, Any]:
    """The row with its ratios: ours / ceiling and ours / peer (medians)."""
    value = row["value"]["median"]
    if row.get("ceiling"):
        ceiling = row["ceiling"]["median"]
        row["ratio"] = value / ceiling if ceiling else None
    if row.get("peer"):
        peer = row["peer"]["median"]
        row["peer_ratio"] = value / peer if peer else None
    return row


def _figure(s: dict[str, Any] | None) -> str:
    if not s:
        return ""
    median, low, high = s["median"], s["min"], s["max"]
    spread = "" if len(s.get("runs", [])) < 2 else f" ({_num(low)}-{_num(high)})"
    return f"{_num(median)}{spread}"


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"# make bench, {results['date']}",
        "",
        f"{results['machine']}. Median of {results['options']['repeats']} runs (min-max). "
        "Ratios are ours / ceiling and ours / peer, of the medians, within this one run.",
        "",
        "| path | unit | now | ceiling | ceiling figure | ratio | eventsourcing peer | vs peer | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        ratio = row.get("ratio")
        peer_ratio = row.get("peer_ratio")
        lines.append("| " + " | ".join([
            row["path"], row["unit"], _figure(row["value"]), row.get("ceiling_name", ""),
            _figure(row.get("ceiling")), "" if ratio is None else f"{ratio:.2f}",
            _figure(row.get("peer")), "" if peer_ratio is None else f"{peer_ratio:.2f}x",
            row.get("note", "")]) + " |")
    for row in results["rows"]:
        for kind, queries in (row.get("statements") or {}).items():
            lines += ["", f"Statements of one {kind} command ({row['path']}):", ""]
            lines += [f"{i}. `{q}`" for i, q in enumerate(queries, 1)]
    if results.get("year"):
        year = results["year"]
        lines += ["", f"Programme year by phase ({year.get('groups') or 'the 2023'} groups, "
                      "`tkm simulate`, its own Kafka and Postgres), seconds:", "",
                  "| phase | seconds |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in year["timings"].items()]
    lines += ["", f"Options: {results['options']}", ""]
    return "\n".join(lines)
