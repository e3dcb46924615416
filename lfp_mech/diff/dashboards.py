"""Offline feature dashboards: one self-contained HTML page per top latent (top activating
contexts, logit effects of its decoder direction, activation histogram) and an index page."""

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from lfp_mech._io import write_text
from lfp_mech.diff.blocks import BlockDiff
from lfp_mech.diff.scoring import logit_effects, unembedding

__all__ = ["INDEX_FILE", "dashboard_file", "write_dashboards"]

INDEX_FILE = "index.html"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:900px;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}"
    "mark{background:#fc8}.pos{color:#070}.neg{color:#a00}"
)


def dashboard_file(layer: int, latent: int) -> str:
    """File name of the dashboard of ``latent`` of block ``layer``'s dictionary."""
    return f"block{int(layer)}_latent_{int(latent)}.html"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _histogram(values: Sequence[float]) -> str:
    from lfp_mech.plotting import new_figure

    fig, ax = new_figure(figsize=(5.0, 2.4))
    ax.hist(list(values) or [0.0], bins=40, color="#4477aa")
    ax.set_xlabel("activation (tokens where it fires)")
    ax.set_ylabel("tokens")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def write_dashboards(
    out_dir: str | os.PathLike[str],
    features: BlockDiff,
    rows: Sequence[dict[str, Any]],
    model: nn.Module,
    tokenizer: Any,
    *,
    n_contexts: int = 12,
) -> Path:
    """Write ``block<L>_latent_<id>.html`` for each row of the latents table and
    ``index.html``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w_u, scale = unembedding(model)
    links = []
    for row in rows:
        f, layer, index = int(row["latent"]), int(row["layer"]), int(row["block_rank"]) - 1
        block = features.blocks[layer]
        acts = block.group_activation(index)
        effect = logit_effects(block.dictionary.W_dec.detach()[f : f + 1], w_u, scale)[0]
        contexts = block.top_contexts(index, tokenizer, n_contexts)
        ctx_rows = "".join(
            f"<tr><td>{c['activation']:.2f}</td><td>{html.escape(c['before'])}"
            f"<mark>{html.escape(c['token'])}</mark></td></tr>"
            for c in contexts
        )
        pos, neg = effect.topk(15), (-effect).topk(15)
        logit_rows = "".join(
            f"<tr><td class=pos>{html.escape(tokenizer.decode([int(i)]))}</td><td>{float(v):+.2f}</td>"
            f"<td class=neg>{html.escape(tokenizer.decode([int(j)]))}</td><td>{-float(u):+.2f}</td></tr>"
            for i, v, j, u in zip(pos.indices, pos.values, neg.indices, neg.values, strict=True)
        )
        image = _histogram(acts[acts > 0].tolist())
        body = (
            f"<h1>Feature {row['rank']}: block {layer}, latent {f}</h1>"
            f"<p>latents {row['members']}</p><p>{html.escape(str(row['description']))}</p>"
            f"<p>{_attribution_text(row.get('kl_attribution'))}"
            f"score (mean activation on tuned-policy tokens) {row['score']:.3f}; fires on "
            f"{100 * row['frequency']:.1f}% of tokens; cos with the difference of means "
            f"{row['cos_mean_diff']:+.2f}</p>"
            f"<h2>Top activating contexts</h2><table><tr><th>act</th><th>context</th></tr>{ctx_rows}</table>"
            f"<h2>Logit effects (decoder direction through the unembedding)</h2>"
            f"<table><tr><th>promoted</th><th></th><th>suppressed</th><th></th></tr>{logit_rows}</table>"
            f"<h2>Activation histogram</h2><img src='data:image/png;base64,{image}'>"
            f"<p><a href='{INDEX_FILE}'>all latents</a></p>"
        )
        name = dashboard_file(layer, f)
        write_text(out / name, _page(f"block {layer} latent {f}", body))
        links.append(
            f"<tr><td>{row['rank']}</td><td>{layer}</td><td><a href='{name}'>{f}</a></td>"
            f"<td>{row['score']:.3f}</td>"
            f"<td>{html.escape(str(row['description']))}</td></tr>"
        )
    index = (
        "<h1>Tuned-specific latents</h1><table><tr><th>rank</th><th>block</th><th>latent</th>"
        "<th>score</th>"
        f"<th>description</th></tr>{''.join(links)}</table>"
    )
    return write_text(out / INDEX_FILE, _page("diff dashboards", index))


def _attribution_text(value: float | None) -> str:
    if value is None or value != value:  # None or NaN: not the attribution ranking
        return ""
    return f"estimated decrease of Σ KL(base ‖ tuned) on the corpus when ablated {value:.1f}; "
