"""Collecting open museum data: The Met Collection API client, resumable crawls, bulk CSV import."""

from .crawl import Crawler, CrawlStopped, CrawlStore, CrawlSummary
from .met import DEFAULT_BASE_URL, GaveUp, MetClient, MetError, NotFound, RateLimiter, RetryPolicy

__all__ = ["Crawler", "CrawlStopped", "CrawlStore", "CrawlSummary", "DEFAULT_BASE_URL", "GaveUp", "MetClient",
           "MetError", "NotFound", "RateLimiter", "RetryPolicy", "resolve_ids"]


def resolve_ids(client: MetClient, store: CrawlStore, *, search: str | None = None, all_objects: bool = False,
                ids: list[int] | None = None, limit: int | None = None, **filters) -> list[int]:
    """The object ids a crawl covers: explicit ids, a search, or the whole collection.

    The list is stored with the crawl the first time, so a resumed crawl covers exactly
    the same objects even if the museum's answer changed in between.
    """
    import json

    if sum(x is not None and x is not False for x in (search, ids, all_objects or None)) != 1:
        raise ValueError("give exactly one of --search, --ids or --all")
    if ids is not None:
        chosen = sorted(set(ids))
    else:
        clean = {k: v for k, v in filters.items() if v is not None}
        key = json.dumps({"search": search, "all": all_objects, **clean}, sort_keys=True)
        if all_objects:
            chosen = store.query_ids(key, lambda: client.object_ids(clean.get("metadataDate"),
                                                                     clean.get("departmentIds")))
        else:
            chosen = store.query_ids(key, lambda: client.search(search, **clean))
    return chosen[:limit] if limit else chosen
