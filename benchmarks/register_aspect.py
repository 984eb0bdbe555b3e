"""Does reading photos with ``fit`` instead of ``squash`` help a register find objects in wide or tall shots?

    .venv/bin/python benchmarks/register_aspect.py [--queries 500] [--embedder pretrained:efficientnet_lite0]
    .venv/bin/python benchmarks/register_aspect.py --data runs/ivory-fresh/manifest.csv --query-split test \
        --embedder runs/embedder-fresh/model

The gallery is every met-ivory photo (as a register holds its studio photos); the queries are
``--queries`` of them drawn with seed 0, each in three versions: in a 16:9 and in a 9:16 frame of its
own backdrop (``unseen_shift.wide_frame`` / ``tall_frame``: a phone's shot of the same scene) and
re-photographed listing-style (``data.listing.rephotograph``, the register benchmark's queries). For
each resize mode the gallery and the queries are embedded the same way, and a query is right when
its nearest gallery photo (cosine) is its own photo. Prints top-1 and top-5 per mode and query kind.
With ``--query-split`` (a manifest with a ``split`` column, e.g. a run's) the queries are drawn from
that split only: photos of objects a trained embedder never saw.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unseen_shift import tall_frame, wide_frame  # noqa: E402

from artsentry.data.dataset import item_seed  # noqa: E402
from artsentry.data.images import load_image  # noqa: E402
from artsentry.data.listing import rephotograph  # noqa: E402
from artsentry.data.manifest import read_manifest  # noqa: E402
from artsentry.index.embedder import Embedder  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "met-ivory" / "metadata.csv"


def jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--embedder", default="pretrained:efficientnet_lite0")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--query-split", default=None, help="draw the queries from this split of --data only")
    a = ap.parse_args(argv)
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    df, _ = read_manifest(a.data)
    paths = df["path"].tolist()
    rng = np.random.default_rng(a.seed)
    pool = np.arange(len(paths))
    if a.query_split is not None:
        if "split" not in df.columns:
            raise SystemExit(f"{a.data} has no split column to draw --query-split {a.query_split} from")
        pool = np.flatnonzero((df["split"] == a.query_split).to_numpy())
    picked = sorted(rng.choice(pool, size=min(a.queries, len(pool)), replace=False).tolist())
    kinds = {"wide_frame": wide_frame, "tall_frame": tall_frame}
    queries: dict[str, list[bytes]] = {k: [] for k in (*kinds, "listing")}
    for n, i in enumerate(picked):
        img = load_image(paths[i])
        for k, f in kinds.items():
            queries[k].append(jpeg(f(img, np.random.default_rng(item_seed(a.seed, n)))))
        queries["listing"].append(jpeg(rephotograph(img, item_seed(a.seed + 1, n))))
    print(f"{len(picked)} queries of each kind made in {time.perf_counter() - t0:.0f} s", flush=True)
    result = {"date": date.today().isoformat(), "command": " ".join(["benchmarks/register_aspect.py", *sys.argv[1:]]),
              "embedder": a.embedder, "gallery": len(paths), "queries": len(picked),
              "query_split": a.query_split, "modes": {}}
    truth = np.array(picked)
    for mode in ("squash", "fit"):
        emb = Embedder.from_spec(a.embedder, resize=mode)
        gallery, errors = emb.embed_files(paths, progress=True)
        if any(errors):
            raise SystemExit(f"unreadable gallery photos: {[e for e in errors if e][:3]}")
        rows = {}
        for kind, data in queries.items():
            q, _ = emb.embed_files(data, names=[f"{kind}-{i}" for i in picked])
            order = np.argsort(-(q @ gallery.T), axis=1)[:, :5]
            rows[kind] = {"top1": round(float((order[:, 0] == truth).mean()), 4),
                          "top5": round(float((order == truth[:, None]).any(1).mean()), 4)}
            print(f"{mode:7s} {kind:11s} top-1 {rows[kind]['top1']:.4f}  top-5 {rows[kind]['top5']:.4f}", flush=True)
        result["modes"][mode] = rows
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
