"""Dataset cards: counts and exploration plots of a built dataset, as JSON and self-contained HTML."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd

from ..files import write_text_atomic
from ..htmlembed import figure_uri, thumbnail_uri, use_agg


def century(row) -> str | None:
    """'19th century' from objectBeginDate / objectEndDate (midpoint), or None."""
    try:
        begin, end = int(row.get("objectBeginDate")), int(row.get("objectEndDate"))
    except (TypeError, ValueError):
        return None
    mid = (begin + end) // 2
    if mid <= 0:
        return "BCE"
    c = mid // 100 + 1
    suffix = "th" if 10 <= c % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(c % 10, "th")
    return f"{c}{suffix} c."


def _century_order(name: str) -> int:
    """'BCE' first, then '1st c.', '2nd c.'... in time's order; anything else ('(empty)') last."""
    if name == "BCE":
        return -1
    digits = re.match(r"\d+", name)
    return int(digits.group()) if digits else 10**6


def _counts(series: pd.Series, top: int = 20) -> dict[str, int]:
    vc = series.replace("", "(empty)").fillna("(empty)").value_counts()
    return {str(k): int(v) for k, v in vc.head(top).items()}


def card_data(df: pd.DataFrame) -> dict:
    objects = df.drop_duplicates("object_id")
    per_object = df.groupby("object_id").size()
    data = {
        "images": int(len(df)),
        "objects": int(df["object_id"].nunique()),
        "classes": int(df["label"].nunique()),
        "images_per_class": _counts(df["label"], top=1000),
        "objects_per_class": _counts(objects["label"], top=1000),
        "images_per_object": {str(k): int(v) for k, v in per_object.value_counts().sort_index().items()},
    }
    if "split" in df:
        data["split"] = {s: _counts(g["label"], top=1000) for s, g in df.groupby("split")}
    for col, name in (("department", "objects_per_department"), ("classification", "objects_per_classification"),
                      ("culture", "objects_per_culture")):
        if col in objects:
            data[name] = _counts(objects[col])
    if "objectBeginDate" in objects:  # in time's order, not by count: a period's gaps show
        counts = _counts(objects.apply(century, axis=1), top=1000)
        data["objects_per_century"] = {k: counts[k] for k in sorted(counts, key=_century_order)}
    return data


def _bar_png(counts: dict[str, int], title: str) -> str:
    plt = use_agg()
    items = list(counts.items())[:30][::-1]  # BCE to the 21st century and "(empty)" fit whole
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(items) + 1))
    ax.barh([k[:40] for k, _ in items], [v for _, v in items], color="#4a7")
    ax.set_title(title)
    return figure_uri(fig, dpi=90)


def _table(head: tuple[str, ...], rows) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + f"</tr>{cells}</table>"


def write_card(df: pd.DataFrame, collection: pd.DataFrame | None, out_dir: str | Path, *, title: str,
               grid: int = 8, warnings: list[str] | None = None, made_by: dict | None = None) -> dict:
    """Write card.json and card.html for dataset ``df`` (absolute paths) into ``out_dir``; ``warnings``: what
    the build warned of about the data, kept with it; ``made_by``: how it was made (the recipe and the
    collection it read), first in the card."""
    out_dir = Path(out_dir)
    data = dict(made_by or {}) | card_data(df)
    if warnings:
        data["warnings"] = list(warnings)
    write_text_atomic(out_dir / "card.json", json.dumps(data, indent=2) + "\n")
    plots = [(k, v) for k, v in data.items() if k.startswith("objects_per_") and isinstance(v, dict) and v]
    imgs = "".join(f'<img class="plot" alt="{html.escape(k)}" src="{_bar_png(v, k.replace("_", " "))}">'
                   for k, v in plots)
    grids = []
    for label, group in df.groupby("label"):
        sample = group.sample(min(grid, len(group)), random_state=0)
        cells = "".join(f'<img src="{src}" alt="{html.escape(label)} example">' for src in
                        (thumbnail_uri(p, 110, 75) for p in sample["path"]) if src)
        grids.append(f"<h3>{html.escape(str(label))} ({len(group)} images)</h3><div class='grid'>{cells}</div>")
    summary = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in data.items()
                      if not isinstance(v, (dict, list)))
    warned = ("<h2>Warnings</h2><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in data["warnings"]) + "</ul>"
              if data.get("warnings") else "")
    splits = ""
    if "split" in data:  # photos of each class in each split (the instance recipe splits each object's photos)
        names = [n for n in ("train", "val", "test") if n in data["split"]]
        splits = "<h2>Splits</h2>" + _table(("class", *names), (
            (k, *(data["split"][n].get(k, 0) for n in names)) for k in data["images_per_class"]))
    per_class = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td><td>{data['objects_per_class'].get(k, '')}</td>"
                        f"</tr>" for k, v in data["images_per_class"].items())
    doc = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:1.5rem;max-width:1100px}}
table{{border-collapse:collapse}}th,td{{border:1px solid #ccc;padding:.2rem .5rem;text-align:left}}
.plot{{max-width:48%;margin:.3rem}}.grid img{{margin:2px;max-height:110px}}</style></head><body>
<h1>{html.escape(title)}</h1><table>{summary}</table>{warned}
<h2>Classes</h2><table><tr><th>class</th><th>images</th><th>objects</th></tr>{per_class}</table>{splits}
<h2>Images per object</h2>{_table(("images of the object", "objects"), data["images_per_object"].items())}
<h2>Exploration</h2>{imgs}<h2>Examples</h2>{''.join(grids)}</body></html>"""
    write_text_atomic(out_dir / "card.html", re.sub(r"\n\s*\n", "\n", doc))
    return data
