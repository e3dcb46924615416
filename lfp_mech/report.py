"""``report.md`` and ``report.html`` of a run: every table and figure, the papers' published numbers
next to ours, and the run's metadata (versions, seed, timings, peak memory per stage).

The report is rebuilt from the run directory alone (manifest + stage folders), so it can be
regenerated at any time with :func:`write_report`.
"""

import base64
import csv
import html
import io
import os
from pathlib import Path
from typing import Any

from lfp_mech._io import write_text
from lfp_mech.pipeline import read_manifest

# Published numbers from the two papers (../shared/REFERENCE.md), shown beside ours per stage.
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


def write_report(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` (figures embedded) into the run."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    sections = [_stage_section(run_dir, name, entry) for name, entry in manifest["stages"].items()]
    md = _markdown(manifest, sections)
    page = _html(manifest, sections, run_dir)
    return write_text(run_dir / "report.md", md), write_text(run_dir / "report.html", page)


def _stage_section(run_dir: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    stage_dir = run_dir / name
    files = sorted(p for p in stage_dir.rglob("*") if p.is_file()) if stage_dir.exists() else []
    return {
        "name": name,
        "entry": entry,
        "tables": [p for p in files if p.suffix == ".md"],
        "csvs": [p for p in files if p.suffix == ".csv" and not p.with_suffix(".md").exists()],
        "figures": [p for p in files if p.suffix == ".png"],
    }


def _markdown(manifest: dict[str, Any], sections: list[dict[str, Any]]) -> str:
    run = manifest["run"]
    lines = [f"# lfp_mech run: {run['name']}", "", *_metadata_lines(manifest), ""]
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
        for table in section["tables"]:
            lines += [f"**{table.stem}**", "", table.read_text(encoding="utf-8").strip(), ""]
        for figure in section["figures"]:
            lines += [f"![{figure.stem}]({_rel(figure, section)})", ""]
    return "\n".join(lines) + "\n"


def _rel(figure: Path, section: dict[str, Any]) -> str:
    # figures live under <run>/<stage>/...; the report sits in <run>/
    parts = figure.parts
    index = len(parts) - 1 - parts[::-1].index(section["name"])
    return "/".join(parts[index:])


def _html(manifest: dict[str, Any], sections: list[dict[str, Any]], run_dir: Path) -> str:
    run = manifest["run"]
    body = [f"<h1>lfp_mech run: {html.escape(run['name'])}</h1>", "<ul>"]
    body += [f"<li>{html.escape(line[2:])}</li>" for line in _metadata_lines(manifest)]
    body.append("</ul>")
    for section in sections:
        entry = section["entry"]
        body += [
            f"<h2>{html.escape(section['name'])}</h2>",
            f"<p>{html.escape(_status_line(entry))}</p>",
        ]
        if entry.get("summary"):
            body.append(
                _html_table(
                    ["metric", "value"], [[k, _fmt(v)] for k, v in entry["summary"].items()]
                )
            )
        if section["name"] in PUBLISHED:
            body.append("<p>Published (papers):</p>")
            body.append(
                _html_table(["what", "published"], [list(r) for r in PUBLISHED[section["name"]]])
            )
        for table in [*section["tables"], *section["csvs"]]:
            csv_path = table.with_suffix(".csv")
            body.append(f"<h3>{html.escape(table.stem)}</h3>")
            if csv_path.exists():
                rows = list(csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8"))))
                body.append(_html_table(rows[0], rows[1:]) if rows else "")
            else:
                body.append(f"<pre>{html.escape(table.read_text(encoding='utf-8'))}</pre>")
        for figure in section["figures"]:
            data = base64.b64encode(figure.read_bytes()).decode()
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(figure.stem)}">'
                f"<figcaption>{html.escape(figure.stem)}</figcaption></figure>"
            )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "font-size:90%}th{background:#f4f4f4}img{max-width:100%}figure{margin:1em 0}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>lfp_mech {html.escape(run['name'])}"
        f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _metadata_lines(manifest: dict[str, Any]) -> list[str]:
    run = manifest["run"]
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    total = sum(e.get("seconds", 0) for e in manifest["stages"].values())
    peak = max((e.get("peak_rss_mb", 0) for e in manifest["stages"].values()), default=0)
    return [
        f"- model: {run['config']['model']}; seed {run['seed']}; device {run['device']}",
        f"- total stage time: {total / 60:.1f} min; peak RSS: {peak / 1024:.2f} GB",
        f"- python {run['python']} on {run['platform']}",
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
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    return str(value)
