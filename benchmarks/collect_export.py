"""Writing a large collection's ``collection.csv``: time and memory of ``crawl.export_collection``.

    .venv/bin/python benchmarks/collect_export.py --objects 100000

Fills a crawl database (``CrawlStore``) in a temporary folder with ``--objects`` records shaped as The
Met's API answers them (~2.5 KB of JSON each: constituents, measurements, tags, long text fields) and
their images (1 to 3 each, all done), then exports it in a fresh process. Prints the export's wall
seconds and how far that process's peak resident memory grew over it. Every crawl ends with this export
(and a whole-collection crawl, ``--all``, holds ~490,000 objects).
"""

from __future__ import annotations

import argparse
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
from artsentry.collect.crawl import CrawlStore, export_collection
folder = Path(sys.argv[1])
store = CrawlStore(folder)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
export_collection(store, folder)
seconds = time.perf_counter() - t
grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
store.close()
rows = sum(1 for _ in open(folder / "collection.csv")) - 1
print(json.dumps({"seconds": round(seconds, 1), "peak_growth_mib": round(grew), "rows": rows,
                  "csv_mib": round((folder / "collection.csv").stat().st_size / 2**20, 1)}))
"""


def met_record(oid: int, r: random.Random) -> dict:
    url = f"https://images.metmuseum.org/CRDImages/as/original/DP{oid:06d}"
    return {
        "objectID": oid, "isHighlight": False, "accessionNumber": f"{r.randint(10, 2020)}.{r.randint(1, 999)}",
        "accessionYear": str(r.randint(1870, 2020)), "isPublicDomain": True, "primaryImage": url + ".jpg",
        "primaryImageSmall": url.replace("original", "web-large") + ".jpg",
        "additionalImages": [f"{url}_{k}.jpg" for k in range(r.randint(0, 2))],
        "constituents": [{"constituentID": r.randint(1, 10**6), "role": "Artist", "name": "Unknown artist " * 2,
                          "constituentULAN_URL": "http://vocab.getty.edu/page/ulan/500" + str(oid),
                          "constituentWikidata_URL": "https://www.wikidata.org/wiki/Q" + str(oid), "gender": ""}],
        "department": "Asian Art", "objectName": "Figure", "title": "Figure of a seated sage holding a scroll, "
        "with an attendant at his side" + str(oid), "culture": "China", "period": "Qing dynasty (1644–1911)",
        "dynasty": "", "reign": "Qianlong period (1736–95)", "portfolio": "", "artistRole": "Artist",
        "artistPrefix": "", "artistDisplayName": "Unknown", "artistDisplayBio": "", "artistSuffix": "",
        "artistAlphaSort": "", "artistNationality": "", "artistBeginDate": "", "artistEndDate": "",
        "artistGender": "", "artistWikidata_URL": "", "artistULAN_URL": "", "objectDate": "18th century",
        "objectBeginDate": 1700, "objectEndDate": 1799, "medium": r.choice(["Ivory", "Porcelain", "Ivory, gold"]),
        "dimensions": "H. 6 1/4 in. (15.9 cm); W. 3 in. (7.6 cm); D. 2 1/8 in. (5.4 cm); with stand: "
                      "H. 7 1/2 in. (19.1 cm)",
        "measurements": [{"elementName": "Overall", "elementDescription": None,
                          "elementMeasurements": {"Height": 15.9, "Width": 7.6, "Depth": 5.4}}],
        "creditLine": "Gift of a collector in memory of a friend, 1936", "geographyType": "", "city": "",
        "state": "", "county": "", "country": "", "region": "", "subregion": "", "locale": "", "locus": "",
        "excavation": "", "river": "", "classification": "Ivories", "rightsAndReproduction": "",
        "linkResource": "", "metadataDate": "2025-04-10T04:52:50.743Z", "repository": "Metropolitan Museum of "
        "Art, New York, NY", "objectURL": f"https://www.metmuseum.org/art/collection/search/{oid}",
        "tags": [{"term": t, "AAT_URL": "http://vocab.getty.edu/page/aat/300" + str(oid),
                  "Wikidata_URL": "https://www.wikidata.org/wiki/Q" + str(oid)} for t in ("Men", "Scrolls", "Sages")],
        "objectWikidata_URL": "https://www.wikidata.org/wiki/Q" + str(oid), "isTimelineWork": False,
        "GalleryNumber": "",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--objects", type=int, default=100_000)
    a = ap.parse_args()
    from artsentry.collect.crawl import CrawlStore, image_urls

    r = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store = CrawlStore(folder)
        ids = list(range(1, a.objects + 1))
        store.add_objects(ids)
        sizes = []
        with store.db:
            store.db.execute("BEGIN")
            for oid in ids:
                rec = met_record(oid, r)
                text = json.dumps(rec, sort_keys=True)
                sizes.append(len(text))
                urls = image_urls(rec, "all", "large")
                store.db.execute("UPDATE objects SET status = 'done', record = ? WHERE object_id = ?", (text, oid))
                store.db.executemany("INSERT INTO images (object_id, idx, url, status, file, sha256) VALUES "
                                     "(?, ?, ?, 'done', ?, ?)", [(oid, k, u, f"images/{oid}/{k}.jpg", "ab" * 32)
                                                                 for k, u in enumerate(urls)])
        store.close()
        out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps({"date": date.today().isoformat(), "objects": a.objects,
                      "record_json_bytes": round(sum(sizes) / len(sizes)), **result}))


if __name__ == "__main__":
    main()
