"""``report.md`` and ``report.html`` of a run: every table and figure, the papers' published numbers
next to ours, and the run's metadata (versions, seed, timings, peak memory per stage).

The report is rebuilt from the run directory alone through
[`lfp_mech.load_run`][lfp_mech.runner.results.load_run], so it can be regenerated at any time
(``lfp-mech report RUN_DIR``)."""

import base64
import html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfp_mech._io import write_text
from lfp_mech.runner.results import Run

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PUBLISHED", "write_report"]

PUBLISHED: dict[str, list[tuple[str, str]]] = {
    "rlhf": [
        ("LFP: VADER task optimiser", "PPO (TRL 0.7), batch 64, KL coef 0.5, lr 1e-6"),
        ("LFP: completions", "8–20 new tokens after 2–10 token IMDB prefixes"),
    ],
    "divergence": [
        ("LFP: most divergent layers", "Pythia-70m 1–5, Pythia-160m 7–11, GPT-Neo-125m 7–11"),
    ],
    "saes": [
        ("LFP: dictionaries", "tied, sizes n and 2n, α = 1e-3 (GPT-Neo 1.5e-3), lr 1e-3"),
        ("LFP: training data", "75,000 activations per layer, batch 32"),
    ],
    "probes": [
        ("LFP: Kendall τ p-value, Pythia-160m", "0.014 (significant)"),
        ("LFP: Kendall τ p-value, Pythia-70m", "0.26"),
        ("LFP: Kendall τ p-value, GPT-Neo-125m", "0.48"),
        ("LFP: untrained (Xavier) baseline p-value", "0.55"),
        ("LFP: logistic probe accuracy (DPO tasks)", "≥ 99.80% on held-out data"),
        ("LFP: PCA of probe inputs", "PC1 explains 97% of variance"),
    ],
    "validate": [
        (
            "LFP: task-related feature activity (Table 7)",
            "2–3× more often active than average, on inputs with probe-predicted delta > 3",
        ),
        ("LFP: ablation (Table 6)", "reward consistent or worse after ablation"),
    ],
    "irl": [
        ("IRL: Pythia-70m accuracy / F1", "80.40% / 78.39% (best of 78 runs; mean ≈ 0.61 ± 0.10)"),
        ("IRL: Pythia-410m accuracy / F1", "78.20% / 71.61%"),
        ("IRL-RLHF toxicity, 70M", "SFT 0.0559 → RLHF(GT) 0.0358 → RLHF(IRL) 0.0264"),
    ],
}
"""Published numbers of the two papers (``REFERENCE.md``), shown beside ours per stage."""


def write_report(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` (figures embedded) into the run."""
    run = Run(run_dir)
    sections = [_section(run, name, entry) for name, entry in run.manifest["stages"].items()]
    markdown = _markdown(run, sections)
    page = _html(run, sections)
    return write_text(run.path / "report.md", markdown), write_text(run.path / "report.html", page)


def _section(run: Run, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    results = run[name] if run.is_complete(name) else None
    tables = results.tables() if results is not None else {}
    return {
        "name": name,
        "entry": entry,
        "tables": tables,
        # the Markdown report shows the tables written for reading (with a .md twin); the HTML
        # page shows every table
        "readable": [t for t in tables if results and (results.path / f"{t}.md").is_file()],
        "figures": results.figures() if results is not None else {},
        # offline HTML pages a stage wrote (feature dashboards): linked, relative to the run
        "pages": sorted(results.path.glob("*/index.html")) if results is not None else [],
    }


def _markdown(run: Run, sections: list[dict[str, Any]]) -> str:
    lines = [f"# lfp_mech run: {run.manifest['run']['name']}", "", *_metadata_lines(run), ""]
    for section in sections:
        entry = section["entry"]
        lines += [f"## {section['name']}", "", _status_line(entry), ""]
        if entry.get("summary"):
            lines += ["| metric | value |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in entry["summary"].items()]
            lines.append("")
        if section["name"] in PUBLISHED:
            lines += ["Published (papers):", "", "| what | published |", "|---|---|"]
            lines += [f"| {what} | {value} |" for what, value in PUBLISHED[section["name"]]]
            lines.append("")
        for name in section["readable"]:
            lines += [f"**{name}**", "", _markdown_table(section["tables"][name]), ""]
        for name in section["figures"]:
            lines += [f"![{Path(name).name}]({section['name']}/{name}.png)", ""]
        for page in section["pages"]:
            link = page.relative_to(run.path).as_posix()
            lines += [f"[{page.parent.name} (offline HTML)]({link})", ""]
    return "\n".join(lines) + "\n"


def _markdown_table(table: "pd.DataFrame") -> str:
    header = "| " + " | ".join(map(str, table.columns)) + " |\n|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, *rows])


def _html(run: Run, sections: list[dict[str, Any]]) -> str:
    name = html.escape(run.manifest["run"]["name"])
    body = [f"<h1>lfp_mech run: {name}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line[2:])}</li>" for line in _metadata_lines(run)]
    body.append("</ul>")
    for section in sections:
        entry = section["entry"]
        body += [
            f"<h2>{html.escape(section['name'])}</h2>",
            f"<p>{html.escape(_status_line(entry))}</p>",
        ]
        if entry.get("summary"):
            rows = [[k, _fmt(v)] for k, v in entry["summary"].items()]
            body.append(_html_table(["metric", "value"], rows))
        if section["name"] in PUBLISHED:
            body.append("<p>Published (papers):</p>")
            published = [list(row) for row in PUBLISHED[section["name"]]]
            body.append(_html_table(["what", "published"], published))
        for table_name, table in section["tables"].items():
            body.append(f"<h3>{html.escape(table_name)}</h3>")
            cells = [[_fmt(v) for v in row] for row in table.itertuples(index=False)]
            body.append(_html_table([str(c) for c in table.columns], cells))
        for page in section["pages"]:
            link = html.escape(page.relative_to(run.path).as_posix())
            body.append(
                f"<p><a href='{link}'>{html.escape(page.parent.name)} (offline HTML)</a></p>"
            )
        for figure_name, path in section["figures"].items():
            data = base64.b64encode(path.read_bytes()).decode()
            label = html.escape(figure_name)
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{label}">'
                f"<figcaption>{label}</figcaption></figure>"
            )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:90%}th{background:#f4f4f4}img{max-width:100%}figure{margin:1em 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lfp_mech {name}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _metadata_lines(run: Run) -> list[str]:
    info = run.manifest["run"]
    stages = run.manifest["stages"].values()
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    total = sum(e.get("seconds", 0) for e in stages)
    peak = max((e.get("peak_rss_mb", 0) for e in stages), default=0)
    return [
        f"- model: {info['config']['model']}; seed {info['seed']}; device {info['device']}; "
        f"dtype {info.get('dtype', 'float32')}; processes {info.get('processes', 1)}",
        f"- total stage time: {total / 60:.1f} min; peak RSS: {peak / 1024:.2f} GB",
        f"- python {info['python']} on {info['platform']}",
        f"- versions: {versions}",
    ]


def _status_line(entry: dict[str, Any]) -> str:
    if entry.get("status") != "complete":
        return f"status: {entry.get('status', 'not run')}"
    return (
        f"complete in {entry['seconds']:.1f} s, peak RSS {entry['peak_rss_mb']:.0f} MB, "
        f"finished {entry['finished']}"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return "" if value is None else str(value)
