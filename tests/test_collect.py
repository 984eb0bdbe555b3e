import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import pandas as pd
import pytest

from artsentry.collect import Crawler, CrawlStore, MetClient, NotFound, RateLimiter, RetryPolicy, resolve_ids
from artsentry.collect.fake_met import FakeMet, FakeMetServer, Faults, _unit
from artsentry.collect.met import RETRY_STATUSES, MetError, parse_retry_after
from artsentry.data.images import load_image

from .conftest import free_port, jpeg_bytes, metobjects_csv, object_photo, reply, running, web_host


def test_rate_limiter_never_exceeds_capacity_in_any_window():
    from concurrent.futures import ThreadPoolExecutor

    limiter = RateLimiter(10, window=0.2)
    stamps = []

    def request():
        with limiter.slot():
            time.sleep(random.random() * 0.01)  # the server sees the request somewhere in its slot
            stamps.append(time.monotonic())
            time.sleep(random.random() * 0.01)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda _: request(), range(45)))
    stamps.sort()
    for i, t in enumerate(stamps):
        assert sum(1 for u in stamps[i:] if u - t < 0.2) <= 10
    assert stamps[-1] - stamps[0] >= 0.8  # 45 requests at 10 per 0.2 s need >= 4 full windows


def test_rate_limiter_refuses_no_capacity_and_lets_a_full_window_go_on():
    with pytest.raises(ValueError, match="at least 1"):
        RateLimiter(0)
    from concurrent.futures import ThreadPoolExecutor

    limiter = RateLimiter(1, window=0.05)  # one request at a time, each window
    t0 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _hold(limiter), range(8)))
    # 8 requests, one per 0.05 s window: about 0.35 s. A waiter that is never woken when its window
    # frees would hang here; the bound is loose so a busy CI machine cannot fail it.
    assert 0.3 <= time.monotonic() - t0 < 5


def test_a_client_rate_under_one_a_second_spaces_its_requests_out():
    """--rate 0.5 (the CLI takes any rate in (0, 80]) was rounded up to 1 request a second, twice what was
    asked; now it is one request per 2 s window. Whole rates are per second, fractions of them dropped."""
    for rate, cap in ((0.5, (1, 2.0)), (0.25, (1, 4.0)), (1, (1, 1.0)), (2.5, (2, 1.0)), (80, (80, 1.0))):
        with MetClient("http://127.0.0.1:9", rate=rate) as client:
            assert (client.limiter.capacity, client.limiter.window) == cap, rate
    for rate in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="the request rate must be above 0"):
            MetClient("http://127.0.0.1:9", rate=rate)


def _hold(limiter):
    with limiter.slot():
        pass


def test_parse_retry_after():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0  # a date gone by


def test_retry_policy_backs_off_exponentially_with_jitter_and_caps_waits():
    policy = RetryPolicy(backoff=0.5, max_backoff=30.0, max_retry_after=120.0)
    random.seed(0)
    for attempt, base in [(0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0)]:
        waits = [policy.wait(attempt, None) for _ in range(300)]
        assert base / 2 <= min(waits) < base * 0.55 and base * 0.95 < max(waits) <= base, (attempt, base)
    assert policy.wait(0, 2.5) == 2.5  # the server's Retry-After, as asked
    assert policy.wait(5, 0.0) == 0.0
    assert policy.wait(0, 3600.0) == 120.0  # but never an hour


class CountingPolicy(RetryPolicy):
    def __init__(self, retries):
        super().__init__(retries=retries)
        self.waits = 0

    def wait(self, attempt, retry_after):
        self.waits += 1
        return 0.0


@contextmanager
def scripted_host(statuses, body=b'{"objectID": 1}', **headers):
    """A host answering each GET with the next status of ``statuses`` (the last one repeated), and
    ``body`` with a 200; yields (base URL, the paths asked for)."""
    asked = []

    def respond(request):
        asked.append(request.path)
        status = statuses[min(len(asked), len(statuses)) - 1]
        reply(request, status, body if status == 200 else b'{"message": "no"}', **headers)

    with web_host(respond) as (base, _):
        yield base, asked


@pytest.mark.parametrize("status", [403, 408, 425, 429, 500, 502, 503, 504])
def test_each_transient_status_is_retried(status):
    """Busy, throttled (the Met answers 403 when it throttles) or failing servers: worth another try."""
    assert status in RETRY_STATUSES
    with scripted_host([status, 200]) as (base, asked), MetClient(base, policy=CountingPolicy(3)) as client:
        assert client.get_json("objects/1") == {"objectID": 1}
    assert len(asked) == 2 and client.requests_sent == 2 and client.policy.waits == 1


@pytest.mark.parametrize("status", [400, 401, 410, 451])
def test_other_errors_fail_at_once_without_retrying(status):
    with scripted_host([status, 200]) as (base, asked), MetClient(base, policy=CountingPolicy(3)) as client:
        with pytest.raises(MetError, match=f"HTTP {status}") as err:
            client.get_json("objects/1")
    assert not isinstance(err.value, NotFound) and err.value.reason == f"HTTP {status}"
    assert len(asked) == 1 and client.policy.waits == 0


def test_404_is_an_answer_asked_once():
    with scripted_host([404, 200]) as (base, asked), MetClient(base, policy=CountingPolicy(3)) as client:
        with pytest.raises(NotFound, match="404"):
            client.get_object(1)
    assert len(asked) == 1


def test_the_client_gives_up_after_its_retries_without_a_last_wait():
    with scripted_host([503]) as (base, asked), MetClient(base, policy=CountingPolicy(2)) as client:
        with pytest.raises(MetError) as err:
            client.get_json("objects/1")
    assert err.value.reason == "gave up after 3 attempts: HTTP 503"
    assert len(asked) == 3 and client.requests_sent == 3
    assert client.policy.waits == 2  # between tries; none after the last one


def test_a_record_without_an_object_id_is_an_error():
    for body in [b'{"message": "gone"}', b"[1, 2]"]:
        with scripted_host([200], body=body) as (base, _), MetClient(base, policy=CountingPolicy(0)) as client:
            with pytest.raises(MetError, match="record without objectID"):
                client.get_object(1)


@pytest.mark.parametrize("body, why", [
    (b'{"total": 3, "objectIDs": "123"}', "objectIDs is not a list of whole numbers"),  # was ids 1, 2 and 3
    (b'{"total": 1, "objectIDs": [1.5]}', "objectIDs is not a list of whole numbers"),
    (b'{"total": 1, "objectIDs": ["12"]}', "objectIDs is not a list of whole numbers"),
    (b'[1, 2]', "a JSON list, not an object"),  # was AttributeError's traceback
])
def test_an_id_list_of_the_wrong_shape_is_retried_then_reported_not_read_as_ids(body, why):
    for ask in (lambda c: c.search("ivory"), lambda c: c.object_ids()):
        with scripted_host([200], body=body) as (base, asked), MetClient(base, policy=CountingPolicy(1)) as client:
            with pytest.raises(MetError) as err:
                ask(client)
        assert err.value.reason == f"gave up after 2 attempts: bad body ({why})" and len(asked) == 2


def test_a_department_list_of_the_wrong_shape_is_reported():
    for body in (b'[1, 2]', b'{"departments": "Asian Art"}', b'{"departments": [1]}'):
        with scripted_host([200], body=body) as (base, _), MetClient(base, policy=CountingPolicy(0)) as client:
            with pytest.raises(MetError, match="bad body .(a JSON list, not an object|departments is not a list)"):
                client.departments()


def test_an_empty_id_list_is_no_ids():
    for body in (b'{"total": 0, "objectIDs": null}', b'{"total": 0}', b'{"total": 2, "objectIDs": [7, 3]}'):
        with scripted_host([200], body=body) as (base, _), MetClient(base, policy=CountingPolicy(0)) as client:
            assert client.search("x") == (json.loads(body).get("objectIDs") or [])


def test_filters_reach_the_server_and_redirects_are_followed():
    asked, agents = [], []

    def respond(request):
        asked.append(request.path)
        agents.append(request.headers.get("User-Agent", ""))
        if request.path.startswith("/old/"):
            return reply(request, 301, Location=request.path.replace("/old/", "/v1/", 1))
        reply(request, 200, b'{"objectIDs": [3, 4]}')

    with web_host(respond) as (base, _), MetClient(base + "/old", policy=CountingPolicy(0)) as client:
        assert client.object_ids(metadata_date="2026-01-02", department_ids=[3, 11]) == [3, 4]
        assert client.object_ids() == [3, 4]
    assert asked[1] == "/v1/objects?metadataDate=2026-01-02&departmentIds=3%7C11"
    assert asked[3] == "/v1/objects"
    assert all(a.startswith("artsentry/") for a in agents)  # a crawler that says who it is


def test_image_bytes_are_checked_and_a_bad_answer_retried():
    from artsentry.collect.crawl import _validate_image

    photo = jpeg_bytes(object_photo((200, 180, 150)))
    page = b"<html>Service Unavailable</html>"
    answers = [page, photo]

    def respond(request):
        reply(request, 200, answers.pop(0) if len(answers) > 1 else answers[0])

    with web_host(respond) as (base, _), MetClient(base, policy=CountingPolicy(3)) as client:
        assert client.get_bytes(base + "/a.jpg", validate=_validate_image) == photo  # the page was retried
        assert client.policy.waits == 1
        assert client.get_bytes(base + "/a.jpg") == photo  # no check asked for: the bytes as sent
        answers[:] = [page]
        assert client.get_bytes(base + "/a.jpg") == page
        with pytest.raises(MetError, match="gave up after 4 attempts: bad body"):
            client.get_bytes(base + "/a.jpg", validate=_validate_image)


@pytest.fixture
def clean_server():
    with FakeMetServer(FakeMet(60, seed=1)) as srv:
        yield srv


def test_client_speaks_the_api(clean_server):
    met = clean_server.met
    with MetClient(clean_server.api_url, rate=80) as client:
        assert len(client.departments()) == 12
        assert client.object_ids() == met.ids
        rec = client.get_object(met.ids[0])
        assert rec["objectID"] == met.ids[0] and "medium" in rec
        with pytest.raises(NotFound):
            client.get_object(999_999_999)
        ivory = client.search("*", medium="Ivory|Porcelain", hasImages=True)
        expected = [i for i in met.ids if ("ivory" in met.record(i, "")["medium"].lower()
                                           or "porcelain" in met.record(i, "")["medium"].lower())
                    and met.record(i, "")["primaryImage"]]
        assert ivory == expected and ivory
        # as the museum's, `medium` matches the object type too: the README's Ivory|Ceramics finds ceramics
        # whose medium says porcelain or earthenware, not "ceramics"
        ceramics = client.search("*", medium="Ceramics")
        assert ceramics and all(met.record(i, "")["classification"] == "Ceramics" for i in ceramics)
        assert any("ceramic" not in met.record(i, "")["medium"].lower() for i in ceramics)
        assert client.search("no-such-thing-anywhere") == []  # objectIDs: null


class RecordingPolicy(RetryPolicy):
    def __init__(self):
        super().__init__(retries=20, backoff=0.01)
        self.retry_afters = []

    def wait(self, attempt, retry_after):
        self.retry_afters.append(retry_after)
        return 0.0 if retry_after is None else 0.01  # do not really sleep a second in a unit test


def test_client_retries_transient_faults_and_honours_retry_after():
    faults = Faults(rate_limit=0.3, forbidden=0.2, server_error=0.1, truncated=0.1, invalid_json=0.1)
    with FakeMetServer(FakeMet(30, seed=2, faults=faults), seed=3) as srv:
        policy = RecordingPolicy()
        with MetClient(srv.api_url, rate=80, policy=policy) as client:
            for oid in srv.met.ids:
                assert client.get_object(oid)["objectID"] == oid
        assert 1.0 in policy.retry_afters  # Retry-After: 1 was read and passed on
        assert None in policy.retry_afters  # faults without it use backoff
        assert client.requests_sent > len(srv.met.ids)


def test_slow_answers_time_out_and_are_retried():
    with FakeMetServer(FakeMet(5, seed=4, faults=Faults(slow=0.5, slow_seconds=1.0)), seed=5) as srv:
        with MetClient(srv.api_url, rate=80, timeout=0.2, policy=RetryPolicy(retries=30, backoff=0.01)) as client:
            t0 = time.monotonic()
            for oid in srv.met.ids:
                client.get_object(oid)
        assert time.monotonic() - t0 < 10


def expected_collection(met: FakeMet, base: str, images="all"):
    """Ground truth: every reachable record and image of the fake collection."""
    records, imgs = set(), set()
    for oid in met.ids:
        if not met.exists(oid):
            continue
        records.add(oid)
        rec = met.record(oid, base)
        n = (1 + len(rec["additionalImages"])) if rec["primaryImage"] else 0
        for k in range(n if images == "all" else min(n, 1)):
            if _unit(met.seed, "broken", oid, k) >= met.faults.broken_image:
                imgs.add((oid, k))
    return records, imgs


def crawl_once(client, folder, ids, images="all"):
    """One crawl of ``ids`` into ``folder`` (two workers), its folder's lock let go however it ends."""
    crawler = Crawler(client, folder, images=images, workers=2, progress=False)
    try:
        return crawler.crawl(ids)
    finally:
        crawler.close()


def test_faulty_crawl_stores_every_reachable_item_exactly_once(tmp_path):
    met = FakeMet(250, seed=7, faults=Faults.uniform(0.05, slow_seconds=0.6))
    with FakeMetServer(met, seed=11) as srv:
        with MetClient(srv.api_url, rate=60, timeout=0.3, policy=RetryPolicy(retries=15, backoff=0.02)) as client:
            crawler = Crawler(client, tmp_path / "col", images="all", workers=8, progress=False)
            ids = resolve_ids(client, crawler.store, search="*")
            summary = crawler.crawl(ids)
            crawler.close()
        assert srv.max_requests_per_window(1.0) <= 60
    records, imgs = expected_collection(met, srv.base_url)
    col = pd.read_csv(tmp_path / "col" / "collection.csv")
    stored = set(zip(col["object_id"], col["image_index"]))
    assert stored == imgs and len(col) == len(imgs)
    assert summary.objects.get("done") == len(records)
    assert summary.objects.get("missing") == len(met.ids) - len(records)
    assert "failed" not in summary.objects and "failed" not in summary.images
    files = sorted((tmp_path / "col" / "images").rglob("*.jpg"))
    assert len(files) == len(imgs)
    assert not list((tmp_path / "col" / "images").rglob("*.tmp"))
    for _, row in col.sample(40, random_state=0).iterrows():
        data = (tmp_path / "col" / row["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        load_image(data)  # every stored image decodes: no truncated bodies or error pages
    failures = pd.read_csv(tmp_path / "col" / "failures.csv")
    assert (failures["reason"].str.len() > 0).all()
    assert set(failures["kind"]) <= {"object", "image"}
    assert (failures["kind"] == "object").sum() == len(met.ids) - len(records)
    assert (failures["kind"] == "image").sum() == sum(
        1 + len(met.record(o, srv.base_url)["additionalImages"]) for o in records
        if met.record(o, srv.base_url)["primaryImage"]) - len(imgs)


def _collect_cmd(url, out):
    return [sys.executable, "-m", "artsentry", "-q", "collect", "--out", str(out), "--search", "*", "--images", "all",
            "--rate", "80", "--workers", "8", "--timeout", "0.3", "--retries", "15", "--backoff", "0.02",
            "--base-url", url]


def test_kill_9_then_resume_gives_the_same_collection(tmp_path):
    met = FakeMet(150, seed=9, faults=Faults.uniform(0.03, slow_seconds=0.5))
    with FakeMetServer(met, seed=13) as srv:
        ref = subprocess.run(_collect_cmd(srv.api_url, tmp_path / "ref"), capture_output=True, text=True,
                             timeout=300)
        assert ref.returncode == 0, ref.stderr[-2000:]
        for attempt, delay in enumerate((1.0 + random.Random(5).random() * 2, 0.5)):
            proc = subprocess.Popen(_collect_cmd(srv.api_url, tmp_path / "killed"), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        done = subprocess.run(_collect_cmd(srv.api_url, tmp_path / "killed"), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    a = (tmp_path / "ref" / "collection.csv").read_bytes()
    b = (tmp_path / "killed" / "collection.csv").read_bytes()
    assert a == b and a.count(b"\n") > 100
    assert (tmp_path / "ref" / "failures.csv").read_bytes() == (tmp_path / "killed" / "failures.csv").read_bytes()
    rows = list(csv.DictReader((tmp_path / "killed" / "collection.csv").open()))
    assert len({r["path"] for r in rows}) == len(rows)
    assert len(list((tmp_path / "killed" / "images").rglob("*.jpg"))) == len(rows)
    assert not list((tmp_path / "killed" / "images").rglob(".*.tmp"))


def test_a_resumed_crawl_removes_the_half_written_files_of_the_killed_one_at_once(tmp_path):
    """kill -9 between an image's write and its rename leaves a temporary file. The resumed crawl holds the
    folder's lock, so it removes such files of a process that is gone however young they are (elsewhere a
    writer's files are left for a minute); a running process's file is kept."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)
    met = FakeMet(5, seed=3)
    oid = next(i for i in met.ids if met.record(i, "http://h")["primaryImage"])
    folder = tmp_path / "col"
    (folder / "images" / str(oid)).mkdir(parents=True)
    killed = [folder / "images" / str(oid) / f".0.jpg.{gone}.140.tmp", folder / f".collection.csv.{gone}.140.tmp"]
    alive = folder / "images" / str(oid) / f".1.jpg.{os.getppid()}.140.tmp"
    for path in killed + [alive]:
        path.write_bytes(b"half")
    with FakeMetServer(met) as srv, MetClient(srv.api_url, policy=CountingPolicy(0)) as client:
        crawl_once(client, folder, met.ids)
    assert not [p for p in killed if p.exists()] and alive.exists()
    assert (folder / "images" / str(oid) / "0.jpg").is_file()


def test_build_ivory_manifest_trains_unchanged(tmp_path):
    from artsentry.cli import main
    from artsentry.data.recipes import build

    met = FakeMet(200, seed=3, image_size=(64, 48))
    with FakeMetServer(met) as srv, MetClient(srv.api_url, rate=80) as client:
        crawler = Crawler(client, tmp_path / "col", images="primary", workers=8, progress=False)
        crawler.crawl(resolve_ids(client, crawler.store, search="*"))
        crawler.close()
    df = build("ivory", tmp_path / "col", tmp_path / "ds")
    assert set(df["label"]) == {"ivory", "non_ivory"}
    card = json.loads((tmp_path / "ds" / "card.json").read_text())
    assert card["images"] == len(df) and "objects_per_department" in card
    assert "<img" in (tmp_path / "ds" / "card.html").read_text()
    code = main(["-q", "train", str(tmp_path / "ds" / "manifest.csv"), "--out", str(tmp_path / "run"),
                 "--mode", "frozen", "--image-size", "64", "--head-epochs", "3"])
    assert code == 0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_resolve_ids_is_stored_for_resume(tmp_path, clean_server):
    with MetClient(clean_server.api_url, rate=80) as client:
        store = CrawlStore(tmp_path)
        first = resolve_ids(client, store, search="*", limit=10)
        n = client.requests_sent
        assert resolve_ids(client, store, search="*", limit=10) == first
        assert client.requests_sent == n  # the stored list was reused
        with pytest.raises(ValueError, match="exactly one"):
            resolve_ids(client, store, search="*", ids=[1])


def test_a_second_crawl_into_the_same_folder_is_refused_naming_the_first(tmp_path, capsys):
    """Two crawls into one collection folder (two terminals, a cron job overlapping the last) once
    crawled everything twice and the second died on a SQLite IntegrityError traceback. The crawl
    holds the folder while it runs; a second is refused in one line, before any request."""
    from artsentry.cli import main

    store = CrawlStore(tmp_path / "col")  # the first crawl, running
    code = main(["-q", "collect", "--base-url", "http://127.0.0.1:9/public/collection/v1", "--search", "*",
                 "--out", str(tmp_path / "col")])  # nothing listens on port 9: no request may be needed
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"{tmp_path / 'col'}: another artsentry collect is writing here (pid {os.getpid()}" in err
    store.close()
    again = CrawlStore(tmp_path / "col")  # the first ended: the folder is free
    assert again.counts() == {"objects": {}, "images": {}}
    again.close()


def test_which_image_urls_a_record_gives():
    from artsentry.collect.crawl import image_urls

    rec = {"primaryImage": "L.jpg", "primaryImageSmall": "S.jpg", "additionalImages": ["a1.jpg", "", "a2.jpg"]}
    assert image_urls(rec, "none", "large") == []
    assert image_urls(rec, "primary", "large") == ["L.jpg"] and image_urls(rec, "primary", "small") == ["S.jpg"]
    assert image_urls(rec, "all", "large") == ["L.jpg", "a1.jpg", "a2.jpg"]  # additional images: one size only
    assert image_urls({**rec, "primaryImageSmall": ""}, "primary", "small") == ["L.jpg"]  # no small one: the large
    assert image_urls({**rec, "primaryImage": "", "primaryImageSmall": ""}, "all", "large") == []
    assert image_urls({"primaryImage": "L.jpg", "additionalImages": None}, "all", "large") == ["L.jpg"]
    # a URL listed twice (the primary among the additional images, or an additional one repeated) is one photo
    again = {"primaryImage": "L.jpg", "additionalImages": ["a1.jpg", "L.jpg", "a1.jpg", "a2.jpg"]}
    assert image_urls(again, "all", "large") == ["L.jpg", "a1.jpg", "a2.jpg"]


def test_a_rerun_retries_failures_but_not_what_is_done_or_missing(tmp_path):
    """The crawl state a resumed or repeated crawl starts from: failed objects and images are fetched again,
    404s (missing) and stored ones are not; the id list of a query is fetched once."""
    store = CrawlStore(tmp_path)
    calls = []
    assert store.query_ids("search=*", lambda: calls.append(1) or [5, 3, 3, 4, 1, 2]) == [1, 2, 3, 4, 5]
    assert store.query_ids("search=*", lambda: calls.append(1) or [9]) == [1, 2, 3, 4, 5] and calls == [1]
    store.add_objects([1, 2, 3, 4])
    assert store.pending_objects([1, 2, 3, 4, 5]) == [1, 2, 3, 4]  # 5 was never added
    store.save_record(1, {"title": "done"}, ["u/1.jpg", "u/1b.jpg"])
    store.mark_object(2, "missing", "ObjectID not found (404)")
    store.mark_object(3, "failed", "HTTP 500 (after 5 tries)")
    store.image_done(1, 1, "images/1/1.jpg", "ab" * 32)
    store.mark_image(1, 0, "failed", "timed out (after 5 tries)")
    assert store.counts() == {"objects": {"done": 1, "missing": 1, "failed": 1, "pending": 1},
                              "images": {"done": 1, "failed": 1}}
    assert store.failures() == [("object", "2", "missing", "ObjectID not found (404)"),
                                ("object", "3", "failed", "HTTP 500 (after 5 tries)"),
                                ("image", "1/0 u/1.jpg", "failed", "timed out (after 5 tries)")]
    store.add_objects([1, 2, 3, 4])  # the same crawl run again
    assert store.pending_objects([1, 2, 3, 4]) == [3, 4]
    assert store.pending_images([1, 2, 3, 4]) == [(1, 0, "u/1.jpg")] and store.pending_images([2]) == []
    store.save_record(1, {"title": "again"}, ["u/1.jpg", "u/other.jpg"])  # stored images are kept as they were
    assert store.db.execute("SELECT object_id, idx, url, file, sha256 FROM images WHERE status = 'done'").fetchall() \
        == [(1, 1, "u/1b.jpg", "images/1/1.jpg", "ab" * 32)]
    assert dict(store.records()) == {1: {"title": "again"}}
    store.close()


def test_a_record_whose_image_url_cannot_be_requested_fails_that_image_not_the_crawl(tmp_path):
    """Record JSON may hold any string. An address no request can be made of (a control character, over
    httpx's length limit, a scheme other than http(s)) is that image's failure, recorded at once without
    retries; the crawl goes on, stores the rest, and a rerun ends the same way."""

    class OddAddresses(FakeMet):
        def record(self, object_id, base):
            record = super().record(object_id, base)
            if object_id == odd:
                record["additionalImages"] = ["http://x/\x01.jpg", "http://x/" + "a" * 70000, "ftp://x/a.jpg"]
            return record

    plain = FakeMet(6, seed=3)
    odd = next(i for i in plain.ids if plain.record(i, "http://h")["primaryImage"])  # an object with photos
    met = OddAddresses(6, seed=3)
    for run in range(2):
        with FakeMetServer(met) as srv, MetClient(srv.api_url, policy=CountingPolicy(3)) as client:
            summary = crawl_once(client, tmp_path / "col", met.ids)
        assert client.policy.waits == 0  # nothing was retried
        assert summary.images.get("failed") == 3 and summary.objects == {"done": 6}
        assert [line.strip() for line in summary.lines()[3:]] == ["3  image: invalid URL"]
        _, imgs = expected_collection(met, srv.base_url)
        stored = pd.read_csv(tmp_path / "col" / "collection.csv")
        assert set(zip(stored["object_id"], stored["image_index"])) == {i for i in imgs if i[0] != odd or i[1] == 0}
        failures = pd.read_csv(tmp_path / "col" / "failures.csv")
        assert failures["id"].str.startswith(f"{odd}/").all() and len(failures) == 3


def test_a_record_whose_image_fields_are_not_urls_fails_that_object_not_the_crawl(tmp_path):
    """A number as primaryImage raised httpx's TypeError out of a worker: a traceback, nothing stored. A text
    as additionalImages became one request per character. Each is now that object's failure; the crawl stores
    the rest. Stored by a run that asked for no images, such a record fails when a rerun asks for them."""

    class OddFields(FakeMet):
        def record(self, object_id, base):
            record = super().record(object_id, base)
            if object_id == odd[0]:
                record["primaryImage"] = 5
            elif object_id == odd[1]:
                record["additionalImages"] = record["primaryImage"]
            return record

    plain = FakeMet(8, seed=3)
    odd = [i for i in plain.ids if plain.record(i, "http://h")["primaryImage"]][:2]
    met = OddFields(8, seed=3)
    with FakeMetServer(met) as srv, MetClient(srv.api_url, policy=CountingPolicy(0)) as client:
        _, imgs = expected_collection(plain, srv.base_url)
        summary = crawl_once(client, tmp_path / "col", met.ids)
        assert summary.objects == {"done": 6, "failed": 2}
        assert sorted(line.strip() for line in summary.lines()[3:]) == [
            "1  object: malformed record: additionalImages is not a list of URLs",
            "1  object: malformed record: primaryImage is not text"]
        stored = pd.read_csv(tmp_path / "col" / "collection.csv")
        assert set(zip(stored["object_id"], stored["image_index"])) == {i for i in imgs if i[0] not in odd}
        crawl_once(client, tmp_path / "later", met.ids, images="none")
        summary = crawl_once(client, tmp_path / "later", met.ids, images="all")
        assert summary.objects == {"done": 6, "failed": 2}
        stored = pd.read_csv(tmp_path / "later" / "collection.csv")
        assert set(zip(stored["object_id"], stored["image_index"])) == {i for i in imgs if i[0] not in odd}


def test_an_api_base_url_without_a_scheme_is_refused_before_any_request(tmp_path):
    with pytest.raises(ValueError, match="must start with http:// or https://, not 'localhost:8765'"):
        MetClient("localhost:8765")
    with scripted_host([200]) as (base, asked):  # schemes are case-blind: HTTP:// is one
        with MetClient("HTTP" + base[4:], policy=CountingPolicy(0)) as client:
            assert client.get_object(1) == {"objectID": 1} and asked == ["/objects/1"]
    out = subprocess.run([sys.executable, "-m", "artsentry", "collect", "--out", str(tmp_path / "col"), "--ids", "1",
                          "--base-url", "localhost:8765"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and not (tmp_path / "col").exists()
    assert out.stderr.strip().splitlines() == ["artsentry collect: error: the API base URL must start with http:// "
                                               "or https://, not 'localhost:8765'"]


def test_an_interrupted_crawl_stops_at_once_not_after_the_queued_items_retries(tmp_path):
    """Ctrl-C in a crawl of a throttling server: the items not started are dropped and the waits between
    attempts (here the server's Retry-After of 100 s) end, so the crawl and its worker threads stop within
    seconds. They used to run every queued item's retries first: minutes before the prompt came back."""
    import threading

    def respond(request):
        if request.path.endswith("/objects/1"):
            reply(request, 200, b'{"objectID": 1, "primaryImage": ""}')
        else:
            reply(request, 503, b"busy", Retry_After=100)

    def ctrl_c(*args):
        raise KeyboardInterrupt

    outcome = []
    with web_host(respond) as (base, _), MetClient(base, policy=RetryPolicy(retries=3)) as client:
        before = set(threading.enumerate())

        def crawl():  # in a thread of its own (the crawl's database with it), so a hang fails the test
            crawler = Crawler(client, tmp_path / "col", workers=2, progress=False)
            crawler.store.save_record = ctrl_c  # the key pressed as the first record comes in
            try:
                crawler.crawl(list(range(1, 40)))
            except KeyboardInterrupt:
                outcome.append("interrupted")
            finally:
                crawler.close()

        run = threading.Thread(target=crawl)
        run.start()
        run.join(30)
        workers = [t for t in set(threading.enumerate()) - before if t.name.startswith("ThreadPoolExecutor")]
        for t in workers:
            t.join(10)
    assert outcome == ["interrupted"] and not run.is_alive()
    assert not [t for t in workers if t.is_alive()]
    sent = client.requests_sent
    assert 0 < sent <= 1 + 2 * 2  # object 1, then at most each worker's item in flight and one more: no retries


def test_a_rerun_asking_for_more_images_fetches_them_for_the_objects_already_collected(tmp_path):
    """Records first (--images none), photos later: the rerun found every object done and no image rows, and
    fetched nothing, saying nothing. Now each stored record's images as the rerun asks for them are added
    (primary, then all), without fetching a record again; asking for fewer drops nothing stored."""
    met = FakeMet(20, seed=4)
    with FakeMetServer(met) as srv, MetClient(srv.api_url, policy=CountingPolicy(0)) as client:
        _, primary = expected_collection(met, srv.base_url, images="primary")
        _, every = expected_collection(met, srv.base_url, images="all")
        assert 0 < len(primary) < len(every)
        sent = []
        for images, held in (("none", set()), ("primary", primary), ("all", every), ("primary", every)):
            crawl_once(client, tmp_path / "col", met.ids, images=images)
            stored = pd.read_csv(tmp_path / "col" / "collection.csv")
            assert set(zip(stored["object_id"], stored["image_index"])) == held, images
            sent.append(client.requests_sent - sum(sent))
    # the records once (the first run), then only the images each run added
    assert sent == [len(met.ids), len(primary), len(every) - len(primary), 0]


def test_collection_csv_rows_carry_their_objects_record_text_as_stored(tmp_path):
    """The export streams image rows joined to their object's record (it held every record in memory): each
    row gets its own object's fields, quotes and line breaks survive, and an image whose object has no
    record (its record fetch failed after an earlier run stored the image) keeps its row, fields empty."""
    from artsentry.collect.crawl import RECORD_FIELDS, export_collection

    store = CrawlStore(tmp_path)
    store.add_objects([1, 2, 3])
    store.save_record(1, {"title": 'A "sage", seated\nwith a scroll', "medium": "Ivory", "culture": None},
                      ["u/1a", "u/1b"])
    store.save_record(2, {"title": "Vase", "medium": "Porcelain", "isPublicDomain": True}, ["u/2"])
    store.add_images([(3, 0, "u/3")])
    for oid, idx in ((1, 0), (1, 1), (2, 0), (3, 0)):
        store.image_done(oid, idx, f"images/{oid}/{idx}.jpg", f"{oid}{idx}" * 32)
    store.mark_object(3, "failed", "HTTP 500")
    export_collection(store, tmp_path)
    store.close()
    rows = list(csv.DictReader((tmp_path / "collection.csv").open(newline="")))
    assert [(r["object_id"], r["image_index"], r["image_kind"], r["url"]) for r in rows] == [
        ("1", "0", "primary", "u/1a"), ("1", "1", "additional", "u/1b"), ("2", "0", "primary", "u/2"),
        ("3", "0", "primary", "u/3")]
    assert [r["title"] for r in rows] == ['A "sage", seated\nwith a scroll'] * 2 + ["Vase", ""]
    assert [r["medium"] for r in rows] == ["Ivory", "Ivory", "Porcelain", ""]
    assert rows[2]["isPublicDomain"] == "true" and rows[0]["culture"] == ""
    assert all(set(RECORD_FIELDS) <= set(r) for r in rows)


def test_a_rerun_fetches_again_the_stored_images_whose_files_have_gone(tmp_path, caplog):
    """Images deleted from the folder after the crawl (or a disk restored from an older backup) stayed
    'done': a rerun fetched nothing, and collection.csv listed files that were not there. Now the rerun
    fetches them again, saying so, and the collection is whole."""
    import logging

    met = FakeMet(12, seed=5)
    folder = tmp_path / "col"
    with FakeMetServer(met) as srv, MetClient(srv.api_url, policy=CountingPolicy(0)) as client:
        for run in range(2):
            with caplog.at_level(logging.WARNING, logger="artsentry"):
                crawl_once(client, folder, met.ids)
            stored = pd.read_csv(folder / "collection.csv")
            if run == 0:
                first, sent = stored, client.requests_sent
                lost = list(stored["path"][:2])
                for path in lost:
                    (folder / path).unlink()
        assert client.requests_sent - sent == 2  # the two lost images, nothing else
    assert stored.equals(first) and all((folder / p).is_file() for p in stored["path"])
    assert [hashlib.sha256((folder / p).read_bytes()).hexdigest() for p in lost] == list(stored["sha256"][:2])
    assert [r.getMessage() for r in caplog.records] == [
        f"{folder}: 2 stored image(s) no longer there, fetched again: {lost[0]}, {lost[1]}"]


def test_the_crawl_summary_counts_failures_by_reason():
    from artsentry.collect.crawl import CrawlSummary

    s = CrawlSummary({"done": 3, "missing": 2}, {"done": 5, "failed": 1}, [
        ("object", "1", "missing", "ObjectID not found (404)"), ("object", "2", "missing", "ObjectID not found (404)"),
        ("image", "3/0 u", "failed", "HTTP 503 (after 5 tries)")], requests=12)
    assert s.lines() == ["objects: done 3, missing 2", "images:  done 5, failed 1", "requests sent: 12",
                         "       2  object: ObjectID not found", "       1  image: HTTP 503"]


def test_collect_from_the_bulk_csv_imports_the_recipe_rows_then_fetches_them(tmp_path, capsys):
    """The README's `collect --metobjects MetObjects.csv --recipe ivory`: the public-domain rows the recipe
    can label are imported (``--offline``: that alone, no request), then their API records and images are
    fetched; run again, nothing is fetched twice."""
    from artsentry.cli import main
    from artsentry.data.recipes import ivory_label

    met = FakeMet(40, seed=21)
    rows = []
    for oid in met.ids:
        rec = met.record(oid, "")
        rows.append({"Object ID": str(oid), "Is Public Domain": str(rec["isPublicDomain"]), "Title": rec["title"],
                     "Medium": rec["medium"], "Classification": rec["classification"], "Culture": rec["culture"],
                     "Object Begin Date": str(rec["objectBeginDate"])})
    metobjects_csv(tmp_path / "MetObjects.csv", rows)
    wanted = sorted(oid for oid in met.ids if met.record(oid, "")["isPublicDomain"]
                    and ivory_label(met.record(oid, "")["medium"]) is not None)
    assert 3 <= len(wanted) < len(met.ids)  # the recipe leaves some rows out, and keeps some
    out = tmp_path / "col"
    offline = ["-q", "collect", "--base-url", "http://127.0.0.1:9/public/collection/v1", "--out", str(out),
               "--metobjects", str(tmp_path / "MetObjects.csv"), "--recipe", "ivory", "--offline"]
    assert main(offline) == 0  # nothing listens on port 9: no request may be needed
    assert f"imported {len(wanted)} record(s)" in capsys.readouterr().out
    store = CrawlStore(out)
    assert store.counts()["objects"] == {"imported": len(wanted)}
    store.close()
    with FakeMetServer(met) as srv:
        command = ["-q", "collect", "--base-url", srv.api_url, "--out", str(out), "--metobjects",
                   str(tmp_path / "MetObjects.csv"), "--recipe", "ivory", "--images", "primary"]
        assert main(command) == 0
        collected = pd.read_csv(out / "collection.csv", dtype=str, keep_default_na=False)
        assert sorted(collected["object_id"].astype(int)) == wanted  # one primary photo each
        assert all(collected["medium"] == [met.record(int(o), "")["medium"] for o in collected["object_id"]])
        sent = len(srv.log)
        assert main(command) == 0
        assert len(srv.log) == sent  # all done: imported again, fetched never
    with pytest.raises(ValueError, match="--recipe and --offline go with --metobjects"):
        from artsentry.cli import build_parser, cmd_collect

        cmd_collect(build_parser().parse_args(["collect", "--out", str(out), "--search", "*", "--offline"]))


def test_the_fake_met_server_runs_as_the_readme_starts_it():
    """`python -m artsentry.collect.fake_met --port 8765` (README: the fake server the client and benchmarks
    are run against) had no test as a command: it serves its objects on the given port and Ctrl-C stops it."""
    import urllib.request

    port = free_port()
    # as from a terminal: a suite started in the background (`make test &`) has SIGINT ignored, and its children with it
    with running([sys.executable, "-m", "artsentry.collect.fake_met", "--port", str(port), "--objects", "40"],
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) as proc:
        assert proc.stdout.readline() == f"fake Met API at http://127.0.0.1:{port}/public/collection/v1\n"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/public/collection/v1/objects", timeout=30) as r:
            body = json.loads(r.read())
        assert body["total"] == 40 and len(body["objectIDs"]) == 40
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err, err


def test_a_damaged_crawl_state_is_named_with_the_way_on(tmp_path, capsys):
    """A crawl.sqlite cut short (a copy stopped half-way, a disk error) stopped collect with SQLite's bare
    'database disk image is malformed' at its first query, naming no file and no way on."""
    import sqlite3

    from artsentry.cli import main
    from artsentry.collect.crawl import CrawlStateError

    folder = tmp_path / "met"
    store = CrawlStore(folder)
    store.add_objects(range(1, 5000))  # several pages
    store.close()
    db = folder / "crawl.sqlite"
    with sqlite3.connect(db) as con:  # everything in the database file itself, none in its write-ahead log
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(CrawlStateError) as refused:
        CrawlStore(folder)
    assert str(refused.value) == (f"{db}: the crawl's state is damaged (database disk image is malformed); move "
                                  "it aside and run the command again to crawl from the start (images on disk are "
                                  "fetched again)")
    db.write_bytes(b"not a database at all" * 100)
    assert main(["-q", "collect", "--out", str(folder), "--ids", "1", "--base-url",
                 "http://127.0.0.1:9/public/collection/v1"]) == 1
    assert f"{db}: the crawl's state is damaged (file is not a database)" in capsys.readouterr().err
    db.unlink()  # moved aside, as the error says: the folder's lock was let go, and a new crawl begins
    CrawlStore(folder).close()


@contextmanager
def blockable_museum(n_objects: int):
    """A museum of ``n_objects`` objects (records and one JPEG each) whose firewall can be switched on:
    ``state["blocked"]`` set to "records" or "images" answers those paths 403 with an HTML page, as a
    blocked address is answered. Yields (API base URL, state); ``state["asked"]`` counts the GETs."""
    photo = jpeg_bytes(object_photo((200, 180, 150)))
    state = {"blocked": None, "asked": 0}

    def respond(request):
        state["asked"] += 1
        path = request.path.split("?")[0]
        kind = "images" if path.startswith("/img/") else "records"
        if state["blocked"] == kind:
            reply(request, 403, b"<html>Request unsuccessful. Incident ID: 1</html>", Content_Type="text/html")
        elif path.endswith("/search"):
            reply(request, 200, json.dumps({"total": n_objects, "objectIDs": list(range(1, n_objects + 1))}).encode())
        elif kind == "images":
            reply(request, 200, photo, Content_Type="image/jpeg")
        else:
            oid = int(path.rsplit("/", 1)[1])
            reply(request, 200, json.dumps({"objectID": oid, "medium": "Ivory", "primaryImage": f"{base}/img/{oid}.jpg",
                                            "additionalImages": []}).encode())

    with web_host(respond) as (base, _):
        yield f"{base}/v1", state


@pytest.mark.parametrize("phase", ["records", "images"])
def test_a_crawl_the_museum_blocks_stops_keeps_what_it_fetched_and_resumes(tmp_path, phase):
    """The museum's firewall blocking the address (403 and an HTML page to every request), or the network
    going down, once left a crawl sending the same refused requests for hours, each object retried with backoff
    and then marked failed: 500 objects at the default 9 attempts take over an hour, the whole collection
    weeks. It stops once 32 requests in a row have each failed every attempt, exports what it has, and the
    same crawl run again after the block resumes it."""
    from artsentry.collect import CrawlStopped

    with blockable_museum(300) as (api, state):
        with MetClient(api, rate=1000, policy=CountingPolicy(2)) as client:
            crawler = Crawler(client, tmp_path / "col", images="primary", workers=2, progress=False)
            ids = resolve_ids(client, crawler.store, search="*")
            state["blocked"] = phase
            with pytest.raises(CrawlStopped) as stopped:
                crawler.crawl(ids)
            counts = crawler.store.counts()
            crawler.close()
        host = api.split("/")[2]
        assert str(stopped.value) == (
            f"stopped: 32 {phase} in a row failed every attempt (the last: gave up after 3 attempts: HTTP 403); "
            f"{host} is refusing requests or cannot be reached. What was fetched is kept: run the same command "
            "again later to resume")
        assert state["asked"] < 1 + 40 * 3 + (300 if phase == "images" else 0)  # not 300 objects' 900 attempts
        done = counts["objects"].get("done", 0)
        if phase == "records":
            assert done == 0 and 32 <= counts["objects"]["failed"] < 40 and counts["images"] == {}
        else:
            assert done == 300 and 32 <= counts["images"]["failed"] < 40
        failures = pd.read_csv(tmp_path / "col" / "failures.csv")  # exported as far as it got
        assert len(failures) == counts[("objects" if phase == "records" else "images")]["failed"]
        assert set(failures["reason"]) == {"gave up after 3 attempts: HTTP 403"}

        state["blocked"] = None  # the block lifted: the same crawl again
        with MetClient(api, rate=1000, policy=CountingPolicy(2)) as client:
            summary = crawl_once(client, tmp_path / "col", ids, images="primary")
    assert summary.objects == {"done": 300} and summary.images == {"done": 300} and summary.failures == []
    assert len(pd.read_csv(tmp_path / "col" / "collection.csv")) == 300


def test_failures_that_are_not_in_a_row_do_not_stop_a_crawl(tmp_path):
    """Objects whose records fail every attempt, between ones that answer: each is that object's failure,
    and the crawl goes on to the end of its list."""
    def respond(request):
        oid = int(request.path.rsplit("/", 1)[1])
        if oid % 2:
            reply(request, 503, b'{"message": "busy"}')
        else:
            reply(request, 200, json.dumps({"objectID": oid, "primaryImage": ""}).encode())

    with web_host(respond) as (base, _), MetClient(base, rate=1000, policy=CountingPolicy(1)) as client:
        summary = crawl_once(client, tmp_path / "col", list(range(1, 201)), images="primary")
    assert summary.objects == {"done": 100, "failed": 100}
    assert {reason for _, _, _, reason in summary.failures} == {"gave up after 2 attempts: HTTP 503"}
