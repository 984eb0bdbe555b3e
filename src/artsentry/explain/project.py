"""What does the network group together? 2-D maps of its learned features.

``features_of`` runs a model (folder or loaded ``Predictor``) over a manifest and returns, per image, the
backbone's pooled features (the input of the classifier head: what the register
embeds too), the prediction and whether it was right. ``embed_2d`` maps them to
two dimensions with PCA, t-SNE or UMAP (scikit-learn / umap-learn, seeded), and
``write_projection`` writes a self-contained interactive HTML plot (switch the
method and the colouring; hovering a point shows its thumbnail and metadata) and
a PNG.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..files import atomic_path, write_csv_atomic, write_text_atomic

PROJECTIONS = ("pca", "tsne", "umap")
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")


def _predictor(model):
    from ..inference import Predictor

    return model if isinstance(model, Predictor) else Predictor.load(model, runtime="torch")


#: the columns ``features_of`` adds to the table it is given
FEATURE_TABLE_COLUMNS = ("predicted", "score", "correct", "error")


def features_of(model, df, *, progress: bool = False):
    """(features (n, d) with NaN rows for unreadable images, table: ``df`` + predicted,
    score, correct, error). ``model``: a model folder or a loaded ``Predictor`` (its
    PyTorch network is used: the features are not an output of the ONNX export), run on as
    many photos at a time as the predictor's batch (``models.inference_batch``)."""
    import torch

    from ..inference import iter_image_batches

    predictor = _predictor(model)
    model = predictor.model
    table = df.reset_index(drop=True).copy()
    feats = np.full((len(table), model.num_features), np.nan, np.float32)
    probs = np.full((len(table), len(predictor.labels)), np.nan, np.float32)
    errors: list[str | None] = [None] * len(table)
    paths = [str(p) for p in table["path"]]
    for batch in iter_image_batches(paths, predictor.transform, predictor.preprocessing, names=paths,
                                    batch_size=predictor.batch_size, progress=progress, desc="features"):
        for i, err in batch.errors:
            errors[i] = err
        if len(batch.index):
            with torch.inference_mode():
                f = model.backbone(batch.x.contiguous(memory_format=torch.channels_last)).float()
                p = torch.softmax(model.head(f) / predictor.temperature, dim=1)  # as the predictor gives them
            feats[batch.index], probs[batch.index] = f.numpy(), p.numpy()
    ok = ~np.isnan(probs[:, 0])
    # each photo's decision as ``predict`` makes it: at the model's threshold for binary models, with the
    # probability of the positive label as the score; else the top class and its probability
    decided = [predictor.decide("", p) if o else None for p, o in zip(probs, ok)]
    table["predicted"] = [d.label if d else None for d in decided]
    table["score"] = [d.score if d else np.nan for d in decided]
    if "label" in table.columns:
        table["correct"] = np.where(ok, (table["predicted"] == table["label"]).map({True: "right", False: "wrong"}),
                                    None)
    table["error"] = errors
    return feats, table


def embed_2d(features: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(n, 2) coordinates of the rows of ``features`` (no NaN rows)."""
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {PROJECTIONS}, not {method!r}")
    n = len(features)
    if n < 3:
        raise ValueError(f"a 2-D map needs at least 3 images, got {n}")
    from sklearn.decomposition import PCA  # it centres the features

    if method == "pca":
        return PCA(2, random_state=seed).fit_transform(features)
    # both neighbour methods work on the first 50 principal components (the usual practice)
    x = PCA(min(50, n - 1, features.shape[1]), random_state=seed).fit_transform(features)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(2, perplexity=float(min(30, (n - 1) / 3)), init="pca", random_state=seed).fit_transform(x)
    try:
        import umap
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ValueError("UMAP needs the umap-learn package: pip install umap-learn") from exc
    init = "spectral" if n > 3 else "pca"  # the spectral start needs more points than 2 dimensions + 1
    return umap.UMAP(n_neighbors=min(15, n - 1), init=init, random_state=seed, n_jobs=1).fit_transform(x)


def _colours(values: Sequence) -> tuple[list[str], dict[str, str]]:
    keys = ["(none)" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values]
    order = sorted(set(keys), key=lambda k: (-keys.count(k), k))
    legend = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(order)}
    return [legend[k] for k in keys], legend


def projection_png(coords: dict[str, np.ndarray], groups: Sequence, title: str, path) -> Path:
    from ..htmlembed import use_agg

    plt = use_agg()
    colours, legend = _colours(groups)
    fig, axes = plt.subplots(1, len(coords), figsize=(4.2 * len(coords), 4.2), squeeze=False)
    for ax, (name, xy) in zip(axes[0], coords.items()):
        ax.scatter(xy[:, 0], xy[:, 1], c=colours, s=10, alpha=0.8, linewidths=0)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in list(legend.items())[:12]]
    axes[0][-1].legend(handles=handles, loc="best", fontsize=8)
    fig.suptitle(title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def projection_html(coords: dict[str, np.ndarray], table, color_by: Sequence[str], *, title: str,
                    thumbnails: bool = True, max_thumbnails: int = 3000) -> str:
    """A self-contained page: an SVG scatter, a method switch and a colouring switch; hovering or
    focusing a point shows its thumbnail and metadata. No script or style from the network."""
    from ..htmlembed import thumbnail_uri

    n = len(table)
    meta_cols = [c for c in ("object_id", "label", "predicted", "score", "correct", "department", "title", "path")
                 if c in table.columns]
    points = []
    for i, (_, r) in enumerate(table.iterrows()):
        meta = {c: (None if r[c] is None or (isinstance(r[c], float) and np.isnan(r[c])) else
                    (round(float(r[c]), 4) if isinstance(r[c], float) else str(r[c]))) for c in meta_cols}
        thumb = thumbnail_uri(r["path"], size=112) if thumbnails and i < max_thumbnails else None
        points.append({"meta": meta, "thumb": thumb})
    colourings = {}
    for col in color_by:
        colours, legend = _colours(table[col].tolist())
        colourings[col] = {"colours": colours, "legend": legend}
    spaces = {}
    for name, xy in coords.items():
        lo, hi = xy.min(0), xy.max(0)
        span = np.where(hi - lo > 0, hi - lo, 1.0)
        spaces[name] = np.round((xy - lo) / span * 560 + 20, 1).tolist()
    data = json.dumps({"points": points, "spaces": spaces, "colourings": colourings}).replace("</", "<\\/")
    methods = "".join(f'<option value="{html.escape(m)}">{html.escape(m)}</option>' for m in coords)
    colours = "".join(f'<option value="{html.escape(c)}">{html.escape(c)}</option>' for c in color_by)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1rem;color:#222}} svg{{border:1px solid #ccc;max-width:100%;height:auto;background:#fff}}
circle{{stroke:#fff;stroke-width:.5}} circle:hover,circle:focus{{stroke:#000;stroke-width:2;outline:none}}
#tip{{position:fixed;pointer-events:none;background:#fff;border:1px solid #999;padding:.4rem;font-size:.8rem;
display:none;max-width:260px;box-shadow:0 2px 6px rgba(0,0,0,.2)}} #tip img{{max-width:112px;display:block}}
.legend span{{display:inline-block;margin-right:.8rem}} .legend i{{display:inline-block;width:.8rem;height:.8rem;
border-radius:50%;margin-right:.25rem;vertical-align:middle}} label{{margin-right:1rem}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{n} images. Features: the backbone's pooled output (the classifier head's input).</p>
<p><label>Method <select id="method">{methods}</select></label>
<label>Colour by <select id="colour">{colours}</select></label></p>
<div class="legend" id="legend"></div>
<svg id="plot" viewBox="0 0 600 600" width="600" height="600" role="img" aria-label="2-D map of image features"></svg>
<div id="tip" role="tooltip"></div>
<script>
const D = {data};
const svg = document.getElementById('plot'), tip = document.getElementById('tip');
const NS = 'http://www.w3.org/2000/svg';
const dots = D.points.map((p, i) => {{
  const c = document.createElementNS(NS, 'circle');
  c.setAttribute('r', 4); c.setAttribute('tabindex', 0);
  c.setAttribute('aria-label', Object.entries(p.meta).map(([k, v]) => k + ' ' + v).join(', '));
  const show = (ev) => {{
    tip.textContent = '';
    if (p.thumb) {{ const im = document.createElement('img'); im.src = p.thumb; im.alt = ''; tip.appendChild(im); }}
    for (const [k, v] of Object.entries(p.meta)) {{
      const d = document.createElement('div'); d.textContent = k + ': ' + v; tip.appendChild(d);
    }}
    const r = c.getBoundingClientRect();
    tip.style.left = Math.min(window.innerWidth - 270, r.right + 8) + 'px';
    tip.style.top = Math.max(0, r.top - 20) + 'px';
    tip.style.display = 'block';
  }};
  c.addEventListener('mouseenter', show); c.addEventListener('focus', show);
  c.addEventListener('mouseleave', () => tip.style.display = 'none');
  c.addEventListener('blur', () => tip.style.display = 'none');
  svg.appendChild(c); return c;
}});
function draw() {{
  const xy = D.spaces[document.getElementById('method').value];
  const col = D.colourings[document.getElementById('colour').value];
  dots.forEach((c, i) => {{ c.setAttribute('cx', xy[i][0]); c.setAttribute('cy', 600 - xy[i][1]);
    c.setAttribute('fill', col.colours[i]); }});
  const lg = document.getElementById('legend'); lg.textContent = '';
  for (const [k, v] of Object.entries(col.legend)) {{
    const s = document.createElement('span'); const dot = document.createElement('i'); dot.style.background = v;
    s.appendChild(dot); s.appendChild(document.createTextNode(k)); lg.appendChild(s);
  }}
}}
document.getElementById('method').addEventListener('change', draw);
document.getElementById('colour').addEventListener('change', draw);
draw();
</script>
</body></html>
"""


def write_projection(model, df, out_dir, *, methods: Sequence[str] = ("pca", "tsne", "umap"),
                     color_by: Sequence[str] | None = None, seed: int = 0, progress: bool = False,
                     title: str | None = None) -> dict:
    """Features of ``df``'s images under ``model`` (folder or ``Predictor``), mapped by each of ``methods``; writes
    ``projection.html``, ``projection.png`` and ``projection.csv`` (coordinates + metadata)
    into ``out_dir``. Returns the paths and counts."""
    bad = [m for m in methods if m not in PROJECTIONS]
    if bad or not methods:
        raise ValueError(f"methods must be among {PROJECTIONS}, got {list(methods)}")
    missing = [c for c in color_by or () if c not in df.columns and c not in FEATURE_TABLE_COLUMNS]
    if missing:  # said before the features are computed, minutes for a large dataset
        raise ValueError(f"cannot colour by {missing}: not columns of the data "
                         f"({sorted(set(df.columns) | set(FEATURE_TABLE_COLUMNS))})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = _predictor(model)
    feats, table = features_of(predictor, df, progress=progress)
    ok = table["error"].isna().to_numpy()
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} readable image(s): a 2-D map needs at least 3")
    feats, kept = feats[ok], table[ok].reset_index(drop=True)
    if color_by is None:
        color_by = [c for c in ("label", "correct", "department") if c in kept.columns and kept[c].notna().any()]
    coords = {m: embed_2d(feats, m, seed) for m in methods}
    title = title or f"Feature map of {predictor.folder.resolve().parent.name if predictor.folder else 'the model'}"
    page = projection_html(coords, kept, list(color_by), title=title)
    write_text_atomic(out / "projection.html", page)
    projection_png(coords, kept[color_by[0]].tolist() if color_by else ["all"] * len(kept), title,
                   out / "projection.png")
    csv = kept.drop(columns=["error"]).copy()
    for m, xy in coords.items():
        csv[f"{m}_x"], csv[f"{m}_y"] = xy[:, 0], xy[:, 1]
    write_csv_atomic(csv, out / "projection.csv")
    return {"html": str(out / "projection.html"), "png": str(out / "projection.png"),
            "csv": str(out / "projection.csv"), "images": int(ok.sum()), "unreadable": int((~ok).sum())}
