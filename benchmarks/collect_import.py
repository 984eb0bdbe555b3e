"""Importing the museum's bulk CSV: time and memory of ``collect --metobjects`` (``import_metobjects``).

    .venv/bin/python benchmarks/collect_import.py --rows 250000

Writes a MetObjects.csv of ``--rows`` rows with the museum file's 54 columns (all public domain, long text
fields as the museum's have them: ~1 KB a row), then imports every row (no recipe, as ``collect
--metobjects F --offline --ids ...`` would) into a fresh crawl database in a fresh process. Prints the
import's wall seconds and how far that process's peak resident memory grew over it. The museum's file holds
~490,000 rows, ~250,000 of them public domain. Run with ``PYTHONPATH=<other checkout>/src`` to measure
another version of the code on the same file.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from artsentry.collect.crawl import CrawlStore
from artsentry.collect.metobjects import import_metobjects
store = CrawlStore(Path(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
ids = import_metobjects(sys.argv[1], store)
seconds = time.perf_counter() - t
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
stored = store.counts()["objects"].get("imported", 0)
store.close()
print(json.dumps({"seconds": round(seconds, 1), "peak_growth_mib": round(grew), "imported": len(ids),
                  "stored": stored}))
"""

#: the museum's MetObjects.csv header (2024)
HEADER = [
    "Object Number", "Is Highlight", "Is Timeline Work", "Is Public Domain", "Object ID", "Gallery Number",
    "Department", "AccessionYear", "Object Name", "Title", "Culture", "Period", "Dynasty", "Reign", "Portfolio",
    "Constituent ID", "Artist Role", "Artist Prefix", "Artist Display Name", "Artist Display Bio", "Artist Suffix",
    "Artist Alpha Sort", "Artist Nationality", "Artist Begin Date", "Artist End Date", "Artist Gender",
    "Artist ULAN URL", "Artist Wikidata URL", "Object Date", "Object Begin Date", "Object End Date", "Medium",
    "Dimensions", "Credit Line", "Geography Type", "City", "State", "County", "Country", "Region", "Subregion",
    "Locale", "Locus", "Excavation", "River", "Classification", "Rights and Reproduction", "Link Resource",
    "Object Wikidata URL", "Metadata Date", "Repository", "Tags", "Tags AAT URL", "Tags Wikidata URL",
]


def row(oid: int, r: random.Random) -> dict:
    return {
        "Object Number": f"{r.randint(10, 2020)}.{r.randint(1, 999)}", "Is Highlight": "False",
        "Is Timeline Work": "False", "Is Public Domain": "True", "Object ID": str(oid), "Department": "Asian Art",
        "AccessionYear": str(r.randint(1870, 2020)), "Object Name": "Figure",
        "Title": f"Figure of a seated sage holding a scroll, with an attendant at his side {oid}",
        "Culture": "China", "Period": "Qing dynasty (1644–1911)", "Reign": "Qianlong period (1736–95)",
        "Constituent ID": str(r.randint(1, 10**6)), "Artist Role": "Artist", "Artist Display Name": "Unknown",
        "Artist ULAN URL": f"http://vocab.getty.edu/page/ulan/500{oid}",
        "Artist Wikidata URL": f"https://www.wikidata.org/wiki/Q{oid}", "Object Date": "18th century",
        "Object Begin Date": "1700", "Object End Date": "1799", "Medium": r.choice(["Ivory", "Porcelain"]),
        "Dimensions": "H. 6 1/4 in. (15.9 cm); W. 3 in. (7.6 cm);\r\nD. 2 1/8 in. (5.4 cm)",
        "Credit Line": "Gift of a collector in memory of a friend, 1936", "Classification": "Ivories",
        "Link Resource": f"http://www.metmuseum.org/art/collection/search/{oid}",
        "Object Wikidata URL": f"https://www.wikidata.org/wiki/Q{oid}", "Metadata Date": "",
        "Repository": "Metropolitan Museum of Art, New York, NY", "Tags": "Men|Scrolls|Sages",
        "Tags AAT URL": "|".join(f"http://vocab.getty.edu/page/aat/300{oid + k}" for k in range(3)),
        "Tags Wikidata URL": "|".join(f"https://www.wikidata.org/wiki/Q{oid + k}" for k in range(3)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=250_000)
    a = ap.parse_args()
    r = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "MetObjects.csv"
        with open(src, "w", newline="", encoding="utf-8-sig") as fh:
            w = csv.DictWriter(fh, HEADER, restval="")
            w.writeheader()
            w.writerows(row(oid, r) for oid in range(1, a.rows + 1))
        out = subprocess.run([sys.executable, "-c", CHILD, str(src), str(Path(tmp) / "col")], capture_output=True,
                             text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({"date": date.today().isoformat(), "rows": a.rows,
                          "csv_mib": round(src.stat().st_size / 2**20, 1), **result}))


if __name__ == "__main__":
    main()
