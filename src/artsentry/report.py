"""Self-contained HTML evaluation reports (plots and thumbnails inlined, no network)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from .evaluate import Evaluation, pr_curve, reliability, roc_curve
from .files import write_text_atomic
from .htmlembed import figure_uri, thumbnail_uri, use_agg


def confusion_labels(ev: Evaluation) -> list[str]:
    """The rows' and columns' labels of ``ev``'s confusion matrix: a binary one is ``[[tn, fp], [fn, tp]]``
    (``binary_metrics``), the negative label first; a multi-class one follows the model's labels."""
    if ev.positive_label:
        return [l for l in ev.labels if l != ev.positive_label] + [ev.positive_label]
    return list(ev.labels)


def _figures(ev: Evaluation) -> dict[str, str]:
    plt = use_agg()
    figs: dict[str, str] = {}
    ok = ev.table[ev.table["error"].isna()]
    cm = np.array(ev.metrics.get("confusion_matrix", []))
    if cm.size:
        names = confusion_labels(ev)
        fig, ax = plt.subplots(figsize=(3.6, 3.2))
        ax.imshow(cm, cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
        ax.set_xticks(range(len(names)), names, rotation=30)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title("Confusion matrix")
        figs["confusion"] = figure_uri(fig)
    if ev.positive_label and ok["label"].nunique() == 2:
        y = (ok["label"] == ev.positive_label).astype(int).to_numpy()
        s = ok["score"].to_numpy()
        roc, pr = roc_curve(y, s), pr_curve(y, s)
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
        axes[0].plot(roc["fpr"], roc["tpr"])
        axes[0].plot([0, 1], [0, 1], ls=":", c="grey")
        axes[0].set(xlabel="false positive rate", ylabel="true positive rate",
                    title=f"ROC (AUC {ev.metrics.get('roc_auc', float('nan')):.3f})")
        axes[1].plot(pr["recall"], pr["precision"])
        t = ev.threshold
        m = ev.metrics
        if m.get("recall") is not None and m.get("precision") is not None:
            axes[1].scatter([m["recall"]], [m["precision"]], c="red", zorder=3, label=f"threshold {t:.3f}")
            axes[1].legend(loc="lower left")
        axes[1].set(xlabel="recall", ylabel="precision", title=f"Precision-recall (AP {m.get('average_precision', 0):.3f})")
        figs["curves"] = figure_uri(fig)
        fig, ax = plt.subplots(figsize=(8, 2.8))
        bins = np.linspace(0, 1, 41)
        for label in ev.labels:
            ax.hist(ok.loc[ok["label"] == label, "score"], bins=bins, alpha=0.6, label=f"true {label}")
        ax.axvline(t, c="red", ls="--", label="threshold")
        ax.set(xlabel=f"p({ev.positive_label})", ylabel="images", title="Score distribution")
        ax.legend()
        figs["scores"] = figure_uri(fig)
        rel = reliability(y, s)
        fig, ax = plt.subplots(figsize=(4.2, 3.6))
        ax.plot([0, 1], [0, 1], ls=":", c="grey", label="calibrated")
        ax.plot([b["mean_score"] for b in rel["bins"]], [b["positive_share"] for b in rel["bins"]], marker="o",
                label="this model")
        for b in rel["bins"]:
            ax.annotate(str(b["n"]), (b["mean_score"], b["positive_share"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"mean p({ev.positive_label}) in the bin",
               ylabel=f"share truly {ev.positive_label}", title=f"Reliability (ECE {rel['ece']:.3f}; n per bin)")
        ax.legend(loc="upper left")
        figs["reliability"] = figure_uri(fig)
    return figs


_INTERVAL_NOTE = ("<p>95% interval: Wilson's score interval of a proportion, where the rate measured on these "
                  "photos could plausibly lie for another sample of as many photos like them. Two models evaluated "
                  "on the same photos are compared photo by photo, not by whether their intervals overlap.</p>")


def _interval_cell(ci) -> str:
    return f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else ""


def _metric_rows(metrics: dict) -> str:
    ci = metrics.get("ci95") or {}
    rows = ["<tr><th></th><th>value</th><th>95% interval</th></tr>"] if ci else []
    for key, value in metrics.items():
        if isinstance(value, (dict, list)):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))
        extra = f"<td>{_interval_cell(ci.get(key))}</td>" if ci else ""
        rows.append(f"<tr><th>{html.escape(key)}</th><td>{shown}</td>{extra}</tr>")
    return "\n".join(rows)


def _overlay_note(n_over: int, n: int) -> str:
    """What the mistakes' overlays are, and which mistakes have one (the surest few: each takes a backward pass)."""
    if not n:
        return ""
    if not n_over:
        return "Shown as they are: this evaluation made no heat maps."
    which = ("" if n_over == n else " The surest mistake has one; the others are shown as they are." if n_over == 1
             else f" The {n_over} surest mistakes have one; the others are shown as they are.")
    return f"Overlays: Grad-CAM of the predicted class (bright = regions that raised its score).{which}"


def _card(r, overlays: dict[str, str]) -> str:
    over = overlays.get(str(r["path"]))
    src = over or thumbnail_uri(r["path"])
    name = html.escape(Path(r["path"]).name)
    alt = f"Grad-CAM overlay of {name}" if over else name
    img = f'<img src="{src}" alt="{alt}">' if src else "<div>(unreadable)</div>"
    cls = ' class="wide"' if over else ""
    warned = r.get("quality_warnings")
    weak = (f'<br><span class="weak">weak photo: {html.escape(warned)}</span>'
            if isinstance(warned, str) and warned else "")
    return (f'<figure{cls}>{img}<figcaption>{name}<br>true <b>{html.escape(str(r["label"]))}</b>, predicted '
            f'<b>{html.escape(str(r["predicted"]))}</b><br>score {r["score"]:.3f}{weak}</figcaption></figure>')


def write_report(ev: Evaluation, path: str | Path, *, title: str, context: dict | None = None,
                 n_mistakes: int = 24, overlays: dict[str, str] | None = None, correct_sample: list[str] | None = None,
                 feature_map: dict | None = None) -> Path:
    """Write an HTML report: metrics, plots, accuracy by group, the most confident mistakes
    (with Grad-CAM overlays where ``overlays`` has them), a sample of correct decisions
    with their overlays, and the feature map. Everything is inlined: no network."""
    overlays = overlays or {}
    path = Path(path)
    figs = _figures(ev)
    table = ev.table
    wrong = ev.confident_mistakes(n_mistakes)
    cards = [_card(r, overlays) for _, r in wrong.iterrows()]
    sample = table[table["path"].astype(str).isin(set(correct_sample or []))]
    correct_cards = [_card(r, overlays) for _, r in sample.iterrows()]
    fmap = ""
    if feature_map and feature_map.get("png"):
        fmap = (f'<h2>Feature map</h2><p>PCA and t-SNE of the backbone features of these images, coloured by '
                f'correctness. Interactive version (hover for the photo): <a href="{html.escape(feature_map["html"])}">'
                f'{html.escape(feature_map["html"])}</a>.</p><img class="plot" src="{feature_map["png"]}" '
                f'alt="feature map">')
    elif feature_map and feature_map.get("note"):
        fmap = f'<h2>Feature map</h2><p>{html.escape(feature_map["note"])}</p>'
    correct_section = (f'<h2>Correct decisions, explained ({len(correct_cards)} sampled)</h2>'
                       f'<div class="gallery">{"".join(correct_cards)}</div>') if correct_cards else ""
    errors = table[table["error"].notna()]
    error_list = "".join(f"<li>{html.escape(e)}</li>" for e in errors["error"])
    by_sections = []
    for key, val in ev.metrics.items():
        if key.startswith("accuracy_by_") and val:
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{v['accuracy']:.3f}</td>"
                           f"<td>{_interval_cell(v.get('ci95'))}</td><td>{v['n']}</td></tr>"
                           for k, v in sorted(val.items(), key=lambda kv: -kv[1]["n"]))
            by_sections.append(f"<h2>{html.escape(key.replace('_', ' '))}</h2><table><tr><th></th><th>accuracy</th>"
                               f"<th>95% interval</th><th>n</th></tr>{rows}</table>")
    imgs = "".join(f'<img class="plot" src="{src}" alt="{name} plot">' for name, src in figs.items())
    ctx = html.escape(json.dumps(context or {}, indent=2))
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1100px;color:#222}}
table{{border-collapse:collapse;margin:.5rem 0}} th,td{{border:1px solid #ccc;padding:.25rem .6rem;text-align:left}}
.plot{{max-width:100%;margin:.5rem .5rem .5rem 0}} .gallery{{display:flex;flex-wrap:wrap;gap:.6rem}}
figure{{margin:0;width:170px;font-size:.8rem}} figure img{{max-width:160px;max-height:160px;display:block}}
figure.wide{{width:300px}} figure.wide img{{max-width:300px;max-height:260px}} .weak{{color:#8a4b00}}
pre{{background:#f6f6f6;padding:.5rem;overflow:auto;font-size:.8rem}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<h2>Metrics</h2><table>{_metric_rows(ev.metrics)}</table>
{_INTERVAL_NOTE if ev.metrics.get("ci95") else ""}
<div>{imgs}</div>
{''.join(by_sections)}
<h2>Most confident mistakes ({len(wrong)} shown)</h2>
<p>{_overlay_note(sum(str(p) in overlays for p in wrong["path"]), len(wrong))}</p>
<div class="gallery">{''.join(cards) or '<p>none</p>'}</div>
{correct_section}
{fmap}
<h2>Unreadable images ({len(errors)})</h2><ul>{error_list or '<li>none</li>'}</ul>
<h2>Context</h2><pre>{ctx}</pre>
</body></html>
"""
    write_text_atomic(path, doc)
    return path
