import io
import json
import logging
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from artsentry.cli import main
from artsentry.files import file_sha256
from artsentry.index import Register, RegisterError, VectorIndex
from artsentry.index.register import contrast_scores
from artsentry.index.vectors import IndexFileError, default_nlist

from .conftest import abc_register, in_fresh_process, register_lot


def _unit_vectors(n, dim, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_exact_index_add_search_remove_save(tmp_path):
    v = _unit_vectors(50, 16)
    index = VectorIndex(16)
    index.add(np.arange(100, 150), v)
    scores, ids = index.search(v[:3], 2)
    assert ids[:, 0].tolist() == [100, 101, 102]
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)
    assert index.remove([101]) == 1 and len(index) == 49
    assert 101 not in index.search(v[1:2], 5)[1]
    index.save(tmp_path / "i.faiss")
    again = VectorIndex.load(tmp_path / "i.faiss")
    assert len(again) == 49 and again.search(v[:1], 1)[1][0, 0] == 100
    data = (tmp_path / "i.faiss").read_bytes()
    (tmp_path / "bad.faiss").write_bytes(data[: len(data) // 3])
    with pytest.raises(IndexFileError, match="not a readable FAISS index"):
        VectorIndex.load(tmp_path / "bad.faiss")


def test_an_index_that_cannot_be_written_is_a_clear_error(tmp_path, monkeypatch):
    """FAISS's write errors are RuntimeErrors: a full disk ended a register import in a traceback. A full disk
    is an OSError naming the index file (the command says how to go on); another failure an IndexFileError."""
    import faiss

    index = VectorIndex(16)
    index.add(np.arange(5), _unit_vectors(5, 16))
    path = tmp_path / "index.faiss"
    for said, raised in (("write error in x.tmp: 1 != 2 (No space left on device)", OSError),
                         ("write error in x.tmp: 1 != 2 (Disk quota exceeded)", OSError),
                         ("Error: 'fp' failed: could not open x.tmp for writing", IndexFileError)):
        def failing(*args, said=said):
            raise RuntimeError(said)

        monkeypatch.setattr(faiss, "write_index", failing)
        with pytest.raises(raised) as error:
            index.save(path)
        if raised is OSError:
            assert error.value.filename == str(path) and error.value.errno in (28, 122)
        else:
            assert str(error.value) == f"{path}: the index could not be written ({said})"
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_a_change_whose_index_write_fails_leaves_the_process_as_the_register_is(tmp_path, photos, monkeypatch):
    """A change adds to (or removes from) this process's index before writing it; when the write failed (a
    full disk) the database rolled back, but the index kept the change: the web server went on with a vector
    its database never held, every search near it raised KeyError, and its next change saved it."""
    reg = abc_register(tmp_path / "reg", photos)
    expected = [r.to_dict() for r in reg.search([photos["A"][1], photos["unknown"]], k=3)]
    real_save = VectorIndex.save

    def full(self, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(VectorIndex, "save", full)
    with pytest.raises(OSError):
        reg.add("D", [photos["unknown"]])
    with pytest.raises(OSError):
        reg.remove("A")
    assert [r.to_dict() for r in reg.search([photos["A"][1], photos["unknown"]], k=3)] == expected
    assert reg.indexed_vectors == 6 and reg.get("D") is None and reg.get("A") is not None
    monkeypatch.setattr(VectorIndex, "save", real_save)
    assert reg.add("D", [photos["unknown"]])[0] == 1  # with room again: what is saved is the register
    reg.close()
    again = Register.open(tmp_path / "reg")  # the index file agrees with the database
    assert again.indexed_vectors == 7 and again.search([photos["unknown"]], k=1)[0].matches[0].object_id == "D"
    again.close()


def test_ivf_index_recall_against_exact():
    base = _unit_vectors(20000, 32, seed=1)
    queries = _unit_vectors(100, 32, seed=2)
    exact, ivf = VectorIndex(32, "exact"), VectorIndex(32, "ivf", nlist=64, nprobe=16)
    ids = np.arange(len(base))
    exact.add(ids, base)
    ivf.add(ids, base)
    _, e = exact.search(queries, 10)
    _, a = ivf.search(queries, 10)
    recall = np.mean([len(set(x) & set(y)) / 10 for x, y in zip(e, a)])
    assert recall >= 0.8  # random vectors are the hard case for cells; real embeddings cluster
    assert ivf.remove([int(e[0, 0])]) == 1
    assert int(e[0, 0]) not in ivf.search(queries[:1], 10)[1]
    few = VectorIndex(32, "ivf")  # fewer vectors than the 16 cells it would make: as many cells as vectors
    few.add(np.arange(5), base[:5])
    assert few.search(base[:5], 1)[1][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_vector_index_scores_cosines_and_marks_missing_neighbours(tmp_path):
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(3, 8)).astype(np.float32) * np.array([[0.1], [5.0], [40.0]], np.float32)
    query = rng.normal(size=(1, 8)).astype(np.float32) * 7
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    cosines = (unit @ (query / np.linalg.norm(query)).T).ravel()
    for kind in ("exact", "ivf"):
        index = VectorIndex(8, kind)
        assert len(index) == 0 and index.remove([1]) == 0
        scores, ids = index.search(query, 2)  # nothing added yet
        assert ids.tolist() == [[-1, -1]] and np.isneginf(scores).all()
        index.add([0, 1, 2], raw)  # any length in: scored as cosines of the directions; id 0 is an id
        scores, ids = index.search(query, 5)  # more neighbours asked than there are
        order = np.argsort(-cosines)
        assert ids[0, :3].tolist() == order.tolist()
        assert np.allclose(scores[0, :3], cosines[order], atol=1e-5)
        assert ids[0, 3:].tolist() == [-1, -1] and np.isneginf(scores[0, 3:]).all()
        assert index.remove([]) == 0 and len(index) == 3
        index.save(tmp_path / f"{kind}.faiss")
        again = VectorIndex.load(tmp_path / f"{kind}.faiss")
        assert again.kind == kind and len(again) == 3
        assert again.search(query, 3)[1].tolist() == ids[:, :3].tolist()
    with pytest.raises(ValueError, match="zero vector"):
        VectorIndex(8).add([1], np.zeros((1, 8), np.float32))


def test_ivf_cells_follow_four_square_roots_of_the_vectors():
    assert [default_nlist(n) for n in (1, 5, 16, 17, 100, 10_000, 1_000_000)] == [1, 5, 16, 16, 40, 400, 4000]


def test_register_add_search_remove_persist(tmp_path, photos):
    reg = Register.create(tmp_path / "reg")
    for name in "ABC":
        n, errors, already = reg.add(name, photos[name][0], title=f"Object {name}", status="stolen")
        assert n == 2 and not errors and already == 0
    assert reg.reshots == 0 and reg.indexed_vectors == 6  # no re-shots unless asked for
    assert reg.embedder.describe()["flip"] is False  # nor mirror images
    results = reg.search([photos[n][1] for n in "ABC"], k=3)
    assert [r.matches[0].object_id for r in results] == ["A", "B", "C"]
    assert results[0].matches[0].title == "Object A" and results[0].matches[0].status == "stolen"
    before = [r.to_dict() for r in reg.search([photos["A"][1], photos["unknown"]], k=3)]

    reg.add(" D", [photos["unknown"]], title="temporary")  # stored as "D": found and removed as it was typed
    assert reg.search([photos["unknown"]], k=1)[0].matches[0].object_id == "D"
    assert reg.get(" D")["title"] == "temporary" and len(reg.object_vectors("D ")) == 1
    assert [h["action"] for h in reg.history(" D")] == ["add"]
    reg.remove(" D")
    after = [r.to_dict() for r in reg.search([photos["A"][1], photos["unknown"]], k=3)]
    assert after == before  # adding then removing leaves search exactly as it was
    reg.close()

    again = Register.open(tmp_path / "reg")
    assert [o["object_id"] for o in again.list()] == ["A", "B", "C"]
    assert [r.to_dict() for r in again.search([photos["A"][1], photos["unknown"]], k=3)] == before
    assert again.get("B")["photos"] == photos["B"][0]
    with pytest.raises(RegisterError, match="not in the register"):
        again.remove("nope")
    # an object none of whose photos can be read is refused, naming why, and nothing is registered
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    with pytest.raises(RegisterError,
                       match=r"object E: none of its 2 photo\(s\) could be read: .*bad\.jpg.*; .*nope\.jpg"):
        again.add("E", [bad, tmp_path / "nope.jpg"])
    with pytest.raises(RegisterError, match="an object needs a non-empty id"):
        again.add("  ", [photos["A"][0][0]])
    assert len(again) == 3 and len(again.index) == 6 and again.get("E") is None


def test_no_match_under_threshold(tmp_path, photos):
    reg = Register.create(tmp_path / "reg")
    reg.add("A", photos["A"][0])
    best = reg.search([photos["A"][1]], k=1)[0].matches[0].score
    reg.set_threshold(best + 1e-3)
    res = reg.search([photos["A"][1]])[0]
    assert res.no_match and res.matches and res.threshold == pytest.approx(best + 1e-3)
    assert not reg.search([photos["A"][1]], threshold=best - 1e-3)[0].no_match
    assert not reg.search([photos["A"][1]], threshold=best)[0].no_match  # a match needs score >= threshold
    with pytest.raises(RegisterError, match="add --lots"):  # composed lot photos calibrate the lot threshold only
        reg.calibrate([photos["A"][1]], compose=4)


def test_damaged_register_files_give_clear_errors(tmp_path, photos):
    reg = Register.create(tmp_path / "reg")
    reg.add("A", photos["A"][0])
    reg.add("B", photos["B"][0])
    reg.close()
    index = tmp_path / "reg" / "index.faiss"
    good = index.read_bytes()
    index.write_bytes(good[: len(good) // 2])
    with pytest.raises(RegisterError, match="corrupted or out of step"):
        Register.open(tmp_path / "reg")
    index.unlink()
    with pytest.raises(RegisterError, match="index file missing"):
        Register.open(tmp_path / "reg")
    # the database is the source of truth: rebuild restores search
    assert main(["-q", "register", "rebuild", str(tmp_path / "reg")]) == 0
    assert Register.open(tmp_path / "reg").search([photos["B"][1]])[0].matches[0].object_id == "B"

    db = tmp_path / "reg" / "register.sqlite"
    data = db.read_bytes()
    db.write_bytes(b"garbage" * 100)
    with pytest.raises(RegisterError, match="corrupted or not a register"):
        Register.open(tmp_path / "reg")
    db.write_bytes(data[:4096])
    with pytest.raises(RegisterError):
        Register.open(tmp_path / "reg")
    # an SQLite database with a settings table that is some other program's
    other = tmp_path / "other"
    other.mkdir()
    con = sqlite3.connect(other / "register.sqlite")
    con.executescript("CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT); "
                      "INSERT INTO settings VALUES ('format', 'someone-elses');")
    con.close()
    with pytest.raises(RegisterError, match="not an artsentry register"):
        Register.open(other)
    (other / "register.sqlite").unlink()  # a sound database with no settings table at all
    sqlite3.connect(other / "register.sqlite").executescript("CREATE TABLE photos (id INTEGER);")
    with pytest.raises(RegisterError, match="not an artsentry register"):
        Register.open(other)
    # photos in the database, no index checksum (the settings row lost): refused, not an empty index
    db.write_bytes(data)
    con = sqlite3.connect(db)
    con.execute("UPDATE settings SET value = '' WHERE key = 'index_sha256'")
    con.commit()
    con.close()
    with pytest.raises(RegisterError, match="corrupted or out of step"):
        Register.open(tmp_path / "reg")


def test_register_cli(tmp_path, photos, capsys):
    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg]) == 0
    # an empty register answers "no match" to every photo, which reads as news about the photo: said why
    assert main(["-q", "register", "search", reg, photos["A"][1]]) == 0
    out, err = capsys.readouterr()
    assert out.split("\t")[1:3] == ["no match", "[]"]
    assert err == (f"note: {reg} holds no objects: nothing can match ('artsentry register add' or 'register import' "
                   "first)\n")
    assert main(["-q", "register", "add", reg, "A", *photos["A"][0], "--title", "Ivory figure", "--status",
                 "stolen"]) == 0
    assert main(["-q", "register", "add", reg, "B", *photos["B"][0]]) == 0
    capsys.readouterr()
    assert main(["-q", "register", "search", reg, photos["A"][1], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["matches"][0]["object_id"] == "A" and res["matches"][0]["title"] == "Ivory figure"
    # the query is a 140 x 107 px crop: its answer says it rests on a small photo
    assert res["quality"]["long_side"] == 140 and res["quality"]["warnings"][0].startswith("small photo: 140 px")
    assert main(["-q", "register", "search", reg, photos["A"][1], "--threshold", "0"]) == 0
    out, err = capsys.readouterr()
    fields = out.strip().split("\t")
    assert fields[1] == "match A" and fields[3].startswith("weak evidence: small photo: 140 px")
    m = res["matches"]  # a contrast score is shown with the similarity it came from
    assert fields[2] == (f"[A {m[0]['score']:.3f} (similarity {m[0]['similarity']:.3f}), "
                         f"B {m[1]['score']:.3f} (similarity {m[1]['similarity']:.3f})]")
    assert err == ""  # a threshold given: nothing to note
    assert main(["-q", "register", "search", reg, photos["A"][1]]) == 0
    assert capsys.readouterr().err == ("note: the register has no no-match threshold: matches are ranked, none "
                                       "decided ('artsentry register calibrate', 'register set-threshold' or "
                                       "--threshold)\n")
    assert main(["-q", "register", "set-threshold", reg, "0.2"]) == 0
    assert capsys.readouterr().out == "no-match threshold set to 0.2\n"
    assert main(["-q", "register", "search", reg, photos["A"][1]]) == 0
    assert capsys.readouterr().err == ""  # the register's own threshold decides
    (tmp_path / "text.jpg").write_text("not a photo")  # an unreadable query: its line, the others answered, exit 3
    assert main(["-q", "register", "search", reg, str(tmp_path / "text.jpg"), photos["A"][1]]) == 3
    out, err = capsys.readouterr()
    assert out.startswith(f"{photos['A'][1]}\tmatch A\t") and out.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'text.jpg'}: ") and err.count("\n") == 1
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert main(["-q", "register", "add", reg, "B", photos["B"][1], str(tmp_path / "empty.jpg"),
                 "https://museum.invalid/b.jpg"]) == 3
    out, err = capsys.readouterr()
    assert out == "B: 1 photo(s) registered; register holds 2 object(s)\n" and "empty.jpg" in err
    assert "b.jpg: a URL, not a file (put it in a table's image column for 'artsentry register import --fetch-urls'" \
        in err
    assert main(["-q", "register", "list", reg]) == 0
    assert capsys.readouterr().out == "A\t2 photo(s)\tstolen\tIvory figure\nB\t3 photo(s)\t\t\n"
    assert main(["-q", "register", "get", reg, "B"]) == 0
    got = capsys.readouterr().out
    assert json.loads(got)["object_id"] == "B" and got.startswith('{\n  "object_id": "B"')
    assert main(["-q", "register", "get", reg, "Z"]) == 1
    assert capsys.readouterr().err == "artsentry register: error: object 'Z' is not in the register\n"
    assert main(["-q", "register", "add", reg, "C", photos["C"][0][0]]) == 0
    assert main(["-q", "register", "remove", reg, "A", "nope", "C"]) == 1  # the ids it has go; the others named
    assert "not in the register, nothing removed for: nope" in capsys.readouterr().err
    assert main(["-q", "register", "list", reg, "--json"]) == 0
    listed = [json.loads(l) for l in capsys.readouterr().out.splitlines() if l.startswith("{")]
    assert [o["object_id"] for o in listed] == ["B"]
    assert main(["-q", "register", "search", reg, str(tmp_path / "missing.jpg")]) == 3


def test_a_photo_added_by_a_relative_path_is_kept_by_its_whole_path(tmp_path, photos, monkeypatch, capsys):
    """`register add reg/ X photos/x.jpg` kept "photos/x.jpg": a server started in another folder showed no
    thumbnail for the match, or another folder's photos/x.jpg (found 2026-12-06)."""
    import shutil

    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    shutil.copy(photos["A"][0][0], work / "photos" / "x.jpg")
    monkeypatch.chdir(work)
    assert main(["-q", "register", "create", "reg"]) == 0
    assert main(["-q", "register", "add", "reg", "X", "photos/x.jpg"]) == 0
    assert main(["-q", "register", "add", "reg", "Y", "photos"]) == 0  # a folder: its photos, whole paths too
    reg = Register.open(work / "reg")
    assert reg.get("X")["photos"] == [str(work / "photos" / "x.jpg")]
    assert reg.get("Y")["photos"] == [str(work / "photos" / "x.jpg")]
    reg.close()
    monkeypatch.chdir(tmp_path)
    from artsentry.serve import Analyzer, ServeSettings

    assert Analyzer(ServeSettings(register=work / "reg"))._thumb("X").startswith("data:image/")


def test_register_history_says_when_what_changed(tmp_path, photos, capsys):
    """Every change (object added with its photos' SHA-256, photos added, removed with what it was,
    thresholds set or calibrated) is kept, oldest first, also after the object is gone; a register
    from before the history opens with an empty one and records from then on."""
    import getpass
    import hashlib
    import sqlite3
    from pathlib import Path

    def sha(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg, "--reshots", "1"]) == 0
    created = Register.open(reg).history()
    assert [r["action"] for r in created] == ["create"] and created[0]["reshots"] == 1
    assert created[0]["scoring"] == "contrast" and created[0]["embedder"]["spec"] == "pretrained:efficientnet_lite0"
    db = sqlite3.connect(Path(reg) / "register.sqlite")  # the schema before the history
    db.execute("DROP TABLE history")
    db.commit()
    db.close()
    assert main(["-q", "register", "add", reg, "A", photos["A"][0][0], "--title", "Ivory figure", "--status",
                 "stolen"]) == 0
    assert main(["-q", "register", "add", reg, "A", photos["A"][0][1], "--status", "recovered"]) == 0
    assert main(["-q", "register", "add", reg, "B", *photos["B"][0]]) == 0
    assert main(["-q", "register", "calibrate", reg, photos["unknown"], "--target-fmr", "0"]) == 0
    assert main(["-q", "register", "remove", reg, "A"]) == 0
    capsys.readouterr()
    assert main(["-q", "register", "history", reg, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["action"], r["object_id"]) for r in rows] == [("add", "A"), ("add_photos", "A"), ("add", "B"),
                                                             ("threshold", None), ("remove", "A")]
    assert rows[0]["photos"] == [sha(photos["A"][0][0])]
    assert rows[0]["metadata"] == {"title": "Ivory figure", "status": "stolen"}
    assert rows[1]["photos"] == [sha(photos["A"][0][1])] and rows[1]["metadata"] == {"status": "recovered"}
    assert rows[2]["photos"] == [sha(p) for p in photos["B"][0]] and "metadata" not in rows[2]
    assert rows[3]["calibrated_on"] == 1 and rows[3]["target_false_match_rate"] == 0
    assert rows[3]["value"] == Register.open(reg).threshold
    assert rows[4]["photos_removed"] == 2 and rows[4]["was"] == {"title": "Ivory figure", "status": "recovered"}
    assert all(r["user"] == getpass.getuser() and r["time"].endswith("+00:00") for r in rows)
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    # one object's history, gone from the register but not from its history; plain lines
    assert main(["-q", "register", "history", reg, "A"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2:4] for line in lines] == [["add", "A"], ["add_photos", "A"], ["remove", "A"]]
    assert lines[0].split("\t")[4].startswith("1 photo(s) {\"metadata\": {\"status\": \"stolen\"")
    assert main(["-q", "register", "history", reg, "nope"]) == 1
    assert "'nope' is not in the register and has no history" in capsys.readouterr().err


def test_adding_photos_an_object_holds_registers_them_once(tmp_path, photos, capsys):
    """A retried API request or a folder added again once registered every photo a second time:
    the object's photo count and history doubled, and removing it reported twice the photos."""
    reg = Register.create(tmp_path / "reg")
    first, second = photos["A"][0]
    assert reg.add("A", [first, first], title="Figure") == (1, [], 1)  # given twice: registered once
    assert reg.add("A", [first, second]) == (1, [], 1)
    with open(first, "rb") as f:  # the same content as bytes, under another name: still the same photo
        assert reg.add("A", [f.read()], status="stolen") == (0, [], 1)
    assert reg.add("B", [first]) == (1, [], 0)  # another object may hold the same photo
    assert reg.get("A")["photos"] == [first, second] and reg.get("A")["status"] == "stolen"
    assert reg.indexed_vectors == 3
    assert [(h["action"], h.get("metadata")) for h in reg.history("A")] == [
        ("add", {"title": "Figure"}), ("add_photos", None), ("update", {"status": "stolen"})]
    assert reg.add("A", [second]) == (0, [], 1) and len(reg.history("A")) == 3  # nothing to record
    reg.close()
    assert main(["register", "add", str(tmp_path / "reg"), "A", first, second, photos["A"][1]]) == 0
    said = capsys.readouterr().out
    assert "A: 1 photo(s) registered (2 skipped: registered under it already, or given twice)" in said
    assert main(["-q", "register", "remove", str(tmp_path / "reg"), "A"]) == 0
    assert "3 photo(s)" in capsys.readouterr().out


def test_a_photo_under_two_objects_is_said_when_added_imported_and_in_info(tmp_path, photos, capsys, caplog):
    """The same photo under two ids is allowed (a set photographed together) but most often one object
    recorded twice: a search for it then matches both alike. It went unsaid."""
    (a0, a1), (b0, b1) = photos["A"][0], photos["B"][0]
    reg = Register.create(tmp_path / "reg")
    reg.add("A", [a0, a1])
    reg.add("B", [b0])
    assert reg.shared_photos() == {}
    with open(a0, "rb") as f:  # the same content, as bytes: the same photo
        reg.add("A2", [f.read()])
    sha = file_sha256(a0)
    assert reg.shared_photos() == {sha: ["A", "A2"]}
    assert reg.shared_photos(["B"]) == {} and reg.shared_photos(["A2"]) == {sha: ["A", "A2"]}
    done = reg.import_objects([("C", [b0], {}), ("D", [photos["C"][0][0]], {})])
    assert done["shared_photos"] == {file_sha256(b0): ["B", "C"]}  # the table's objects only
    reg.close()
    caplog.clear()
    assert main(["-q", "register", "add", str(tmp_path / "reg"), "E", a1, photos["C"][0][1]]) == 0
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == 1 and said[0].startswith(
        f"1 photo(s) registered under more than one object ({file_sha256(a1)[:12]} under A, E): one object recorded "
        "twice?"), said
    caplog.clear()
    assert main(["-q", "register", "add", str(tmp_path / "reg"), "F", photos["C"][1]]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]  # a photo no other object holds
    capsys.readouterr()
    assert main(["register", "info", str(tmp_path / "reg")]) == 0
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["shared photos"].startswith("3 photo(s) under more than one object (e.g. ")
    assert main(["register", "info", str(tmp_path / "reg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shared_photos"] == 3


def test_one_id_rule_for_the_command_an_import_and_the_api(tmp_path, photos, capsys):
    """The command registered any id (a newline in one broke 'register list'), the API only letters, digits and
    '._:-': an object registered from a terminal as museums number them ('Inv. 1999/12 (a)') could not be
    fetched or removed through the API, nor registered there. One rule now, checked before photos are read."""
    from artsentry.index.register import OBJECT_ID, check_object_id

    reg = Register.create(tmp_path / "reg")
    for good in ("29.100.6a–c", "Inv. 1999/12 (a)", "象牙-1", "A/historic", "x" * 128):
        assert check_object_id(f" {good} ") == good and OBJECT_ID.fullmatch(good)
    for bad, why in (("A\nB", "holds control characters"), ("A\tB", "holds control characters"),
                     ("x" * 129, "is 129 characters long; at most 128"), ("A/history", "ends in '/history'"),
                     (" ", "an object needs a non-empty id")):
        with pytest.raises(RegisterError, match=re.escape(why)):
            reg.add(bad, [photos["A"][0][0]])
    assert len(reg) == 0 and reg.history()[-1]["action"] == "create"
    reg.add("Inv. 1999/12 (a)", [photos["A"][0][0]])
    assert reg.get("Inv. 1999/12 (a)")["photos"] == [photos["A"][0][0]]
    reg.close()
    table = tmp_path / "catalogue.csv"
    table.write_text(f'object_id,image\n"B\tC",{photos["B"][0][0]}\nC,{photos["C"][0][0]}\n')
    assert main(["-q", "register", "import", str(tmp_path / "reg"), str(table)]) == 3
    out, err = capsys.readouterr()
    assert "line 2: object id 'B\\tC' holds control characters (a tab, a newline...): skipped" in err
    assert "imported 1 photo(s), 1 new object(s)" in out
    # a catalogue's title or status may hold line breaks and tabs: 'register list' stays one line, four fields each
    Register.open(tmp_path / "reg").add("C", [photos["C"][0][1]], title="Ivory figure\nof a saint\t(a)",
                                        status="stolen\r\n1998")
    assert main(["register", "list", str(tmp_path / "reg")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 4 for line in lines)
    assert lines[0] == "C\t2 photo(s)\tstolen\\r\\n1998\tIvory figure\\nof a saint\\t(a)"


def test_a_photo_registered_elsewhere_while_being_embedded_is_not_registered_twice(tmp_path, photos, monkeypatch):
    """``add`` and ``import`` leave out the photos an object holds before embedding the rest; in those
    seconds another process (the server, a second terminal) can register the same photo. They check
    again under the write lock: the photo is held once, and counted as already registered."""
    reg = Register.create(tmp_path / "reg")
    first, second = photos["A"][0]
    reg.add("A", [first], title="Figure")
    other = Register.open(tmp_path / "reg")  # the other process
    embed = reg.embedder.embed_files

    def meanwhile(photo):
        def embedding(files, **kwargs):
            out = embed(files, **kwargs)
            other.add("A", [photo])
            return out
        return embedding

    monkeypatch.setattr(reg.embedder, "embed_files", meanwhile(second))
    assert reg.add("A", [second], status="stolen") == (0, [], 1)
    assert reg.get("A")["photos"] == [first, second] and reg.get("A")["status"] == "stolen"
    assert reg.indexed_vectors == 2
    assert [(h["action"], h.get("metadata")) for h in reg.history("A")] == [
        ("add", {"title": "Figure"}), ("add_photos", None), ("update", {"status": "stolen"})]
    third = photos["A"][1]
    monkeypatch.setattr(reg.embedder, "embed_files", meanwhile(third))
    done = reg.import_objects([("A", [third], {}), ("B", [photos["B"][0][0]], {})])
    assert (done["photos_added"], done["already_registered"], done["objects_added"]) == (1, 1, 1)
    assert reg.get("A")["photos"] == [first, second, third] and reg.indexed_vectors == 4
    other.close()
    reg.close()


def test_an_object_with_more_photos_than_the_search_depth_leaves_room_for_the_others(tmp_path):
    """The search reads a fixed number of nearest photos (37 for k = 5). An object photographed 40 times
    filled them all: the query got one match instead of five, and its contrast score, with no other
    objects to be contrasted with, was its bare similarity, so it matched more easily than an object
    of one photo would."""
    from .conftest import jpeg_bytes, object_photo

    reg = Register.create(tmp_path / "reg")
    cream = (226, 214, 180)
    reg.add_many([("MANY", [jpeg_bytes(object_photo(cream, seed=s)) for s in range(40)], {})]
                 + [(f"O{j}", [jpeg_bytes(object_photo(c, seed=50 + j))], {}) for j, c in enumerate(
                     [(40, 60, 160), (160, 40, 40), (40, 140, 60), (90, 90, 90), (200, 120, 30)])])
    query = jpeg_bytes(object_photo(cream, seed=99))
    vec = reg.embedder.embed_tensor(reg.embedder.transform(Image.open(io.BytesIO(query)).convert("RGB"))[None])
    nearest = reg.index.search(vec, 37)[1][0]  # the case: the 37 nearest photos are all the one object's
    assert {reg._photo_groups([int(i)])[int(i)][0] for i in nearest} == {"MANY"}
    [matches] = reg.search_vectors(vec, k=5)
    assert [m.object_id for m in matches][0] == "MANY" and len(matches) == 5
    sims = np.array([m.similarity for m in matches])
    assert matches[0].score == pytest.approx(sims[0] - 0.5 * sims[1:5].mean(), abs=1e-5)
    assert matches[0].score < matches[0].similarity
    # every object by its best photo: the same as searching every photo at once
    every = reg.index.search(vec, len(reg.index))
    best = {}
    for s, i in zip(every[0][0], every[1][0]):
        best.setdefault(reg._photo_groups([int(i)])[int(i)][0], float(s))
    assert [(m.object_id, m.similarity) for m in matches] == [(o, pytest.approx(v, abs=1e-5))
                                                               for o, v in list(best.items())[:5]]
    assert len(reg.search_vectors(vec, k=50)[0]) == 6  # k over the register's objects: all of them
    # k = 1 still contrasts with the next four objects
    assert reg.search_vectors(vec, k=1)[0][0].score == pytest.approx(matches[0].score, abs=1e-6)
    # deeper only when needed: one read of 37 photos for a query the others are near, two for this one
    depths, search = [], reg.index.search

    def spy(q, depth):
        depths.append(depth)
        return search(q, depth)

    reg.index.search = spy
    reg.search_vectors(vec, k=5)
    other = reg.embedder.embed_tensor(reg.embedder.transform(object_photo((40, 60, 160), seed=7))[None])
    reg.search_vectors(other, k=5)
    assert depths == [37, 45, 37]
    reg.close()


def test_a_register_grown_past_the_threshold_switches_to_the_approximate_index(tmp_path, monkeypatch, capsys):
    """Exact search costs ~0.6 s a query at a million photos (BENCHMARKS.md): a register grown there by
    ``add`` and ``import`` kept its exact index until someone ran ``rebuild``. It now switches once,
    when an addition takes it past ``IVF_THRESHOLD`` vectors (here 12), and says so in ``info``."""
    from artsentry.index import vectors

    from .conftest import jpeg_bytes, object_photo

    monkeypatch.setattr(vectors, "IVF_THRESHOLD", 12)
    colours = [(226, 214, 180), (40, 60, 160), (160, 40, 40), (40, 140, 60), (90, 90, 90), (200, 120, 30),
               (120, 40, 160)]
    reg = Register.create(tmp_path / "reg")
    reg.add_many([(f"O{j}", [jpeg_bytes(object_photo(c, seed=10 * j + s)) for s in range(2)], {})
                  for j, c in enumerate(colours[:5])])
    assert reg.info()["index"] == "exact" and len(reg.index) == 10
    query = reg.embedder.embed_tensor(reg.embedder.transform(object_photo(colours[2], seed=99))[None])
    before = reg.search_vectors(query, k=3)[0]
    reg.add("O5", [jpeg_bytes(object_photo(colours[5], seed=51)), jpeg_bytes(object_photo(colours[5], seed=52))])
    assert reg.index.kind == "ivf" and len(reg.index) == 12
    after = reg.search_vectors(query, k=3)[0]
    # its 16 cells are all searched (nprobe 32): the same answer as the exact index gave
    assert [(m.object_id, round(m.similarity, 5)) for m in after[:3]] == \
        [(m.object_id, round(m.similarity, 5)) for m in before[:3]]
    reg.close()
    again = Register.open(tmp_path / "reg")  # the file holds the ivf index, checksum and all
    assert again.index.kind == "ivf" and len(again.index) == 12
    assert [m.object_id for m in again.search_vectors(query, k=3)[0]] == [m.object_id for m in after]
    again.add("O6", [jpeg_bytes(object_photo(colours[6], seed=61))])  # further photos go into its cells
    assert again.index.kind == "ivf" and len(again.index) == 13
    again.close()
    assert main(["register", "info", str(tmp_path / "reg")]) == 0
    assert "(13 vectors indexed, ivf search)" in capsys.readouterr().out


def test_register_info_says_whether_it_can_decide(tmp_path, photos, capsys):
    reg = Register.create(tmp_path / "reg", reshots=1)
    reg.add("A", photos["A"][0], title="Figure")
    info = reg.info()
    assert {k: info[k] for k in ("objects", "photos", "indexed_vectors", "reshots_per_photo", "threshold",
                                 "lot_threshold", "scoring", "resize", "flip")} == {
        "objects": 1, "photos": 2, "indexed_vectors": 4, "reshots_per_photo": 1, "threshold": None,
        "lot_threshold": None, "scoring": "contrast", "resize": "fit", "flip": False}
    assert info["changes"] == 2 and info["changed"] == reg.history()[-1]["time"]
    reg.close()
    assert main(["register", "info", str(tmp_path / "reg")]) == 0
    lines = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["no-match threshold"].startswith("not set: matches are ranked, none decided")
    assert lines["photos"] == "2, 1 re-shot(s) each (4 vectors indexed, exact search)" and lines["lot threshold"] == "not set"
    assert main(["-q", "register", "set-threshold", str(tmp_path / "reg"), "0.25"]) == 0
    capsys.readouterr()
    assert main(["register", "info", str(tmp_path / "reg"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.25
    # a calibrated threshold sits one float step above a score: its digits beyond the sixth were float noise
    Register.open(tmp_path / "reg").set_threshold(float(np.nextafter(0.138092, 1.0)))
    assert main(["register", "info", str(tmp_path / "reg")]) == 0
    assert "no-match threshold\t0.138092\n" in capsys.readouterr().out


def test_threshold_for_false_match_rate_by_hand():
    from artsentry.index.register import threshold_for_false_match_rate

    best = np.array([0.1, 0.5, 0.2, 0.9, 0.3, 0.4, 0.35, 0.45, 0.25, 0.15])
    t = threshold_for_false_match_rate(best, 0.1)  # one of ten may match: the 0.9
    assert 0.5 < t < 0.5 + 1e-9 and (best >= t).sum() == 1
    t0 = threshold_for_false_match_rate(best, 0.0)
    assert (best >= t0).sum() == 0 and t0 > 0.9
    assert (best >= threshold_for_false_match_rate(best, 0.25)).sum() == 2  # floor(2.5)
    with pytest.raises(ValueError):
        threshold_for_false_match_rate(best, 1.0)


def test_calibrate_sets_a_threshold_unregistered_photos_do_not_reach(tmp_path, photos, capsys, caplog):
    reg = tmp_path / "reg"
    assert main(["-q", "register", "create", str(reg)]) == 0
    # an empty register set its threshold to -1.0 (just above the score of no match at all)
    assert main(["-q", "register", "calibrate", str(reg), photos["unknown"]]) == 1
    assert "the register holds no objects: register them first, then calibrate" in capsys.readouterr().err
    assert Register.open(reg).threshold is None
    for name in "AB":
        assert main(["-q", "register", "add", str(reg), name, *photos[name][0]]) == 0
    unregistered = [*photos["C"][0], photos["C"][1], photos["unknown"]]
    assert main(["-q", "register", "calibrate", str(reg), *unregistered, "--target-fmr", "0"]) == 0
    assert "0 of 4 unregistered photo(s) still match" in capsys.readouterr().out
    r = Register.open(reg)
    assert all(res.no_match for res in r.search(unregistered))
    threshold = r.threshold
    # the registered objects' own photos still match
    assert not r.search(photos["A"][0])[0].no_match
    r.close()
    # an unreadable calibration photo is reported, the rest still count
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["-q", "register", "calibrate", str(reg), str(bad), *unregistered, "--target-fmr", "0"]) == 3
    assert "bad.jpg" in capsys.readouterr().err
    assert Register.open(reg).threshold == pytest.approx(threshold)
    # a registered photo among them matches itself and would lift the threshold over true matches: refused
    assert main(["-q", "register", "calibrate", str(reg), *unregistered, photos["B"][0][1]]) == 1
    err = capsys.readouterr().err
    assert f"1 of the 5 calibration photo(s) are registered here (e.g. {photos['B'][0][1]}, a photo of object B)" in err
    with pytest.raises(RegisterError, match="1 of the 2 calibration photo.s. are registered here"):
        Register.open(reg).calibrate([photos["unknown"], Path(photos["A"][0][0]).read_bytes()], lots=True, compose=1)
    assert Register.open(reg).threshold == pytest.approx(threshold)
    # four photos cannot measure a rate of 1 in 100 (one photo calibrated the examples of a hand check): said
    with caplog.at_level(logging.WARNING, logger="artsentry"):
        Register.open(reg).calibrate(unregistered, target_fmr=0.01)
        Register.open(reg).calibrate(unregistered, target_fmr=0.25)  # one of four may match: measured
    assert caplog.messages == ["calibrated on 4 photo(s): a false-match rate of 0.01 needs 100 or more to be measured "
                               "(one false match among 4 is a rate of 1/4); the threshold is set just above the best "
                               "score of these, and the rate it gives is not known: calibrate on more photos of "
                               "unregistered objects"]


def test_a_photo_is_kept_under_the_hash_of_the_bytes_embedded_even_if_its_file_changes_meanwhile(
        tmp_path, photos, monkeypatch):
    """The register read each file up to four times (the check for photos held already, the re-shots,
    the embedding, the hash it keeps): a file replaced while the batch was embedded was kept under the
    new content's SHA-256 with the old content's vector and re-shots. Now it is read once for all three."""
    import hashlib
    import shutil

    reg = Register.create(tmp_path / "reg", reshots=1)
    photo = tmp_path / "listing.jpg"
    shutil.copyfile(photos["A"][0][0], photo)
    embedded_sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    embed = reg.embedder.embed_files

    def embedding(files, **kwargs):
        shutil.copyfile(photos["B"][0][0], photo)  # the seller's photo replaced while it is embedded
        return embed(files, **kwargs)

    monkeypatch.setattr(reg.embedder, "embed_files", embedding)
    assert reg.add("A", [photo]) == (1, [], 0)
    assert reg.history("A")[-1]["photos"] == [embedded_sha]
    rows = reg.db.execute("SELECT name, sha256, vector FROM photos ORDER BY vector_id").fetchall()
    assert [r[:2] for r in rows][0] == (str(photo), embedded_sha) and rows[1][0] == f"{photo} [re-shot 1]"
    monkeypatch.undo()
    vector = np.frombuffer(rows[0][2], dtype=np.float32)
    assert np.allclose(vector, reg.embedder.embed_files([photos["A"][0][0]])[0][0], atol=1e-5)
    # an unreadable photo is still named by its path, and a photo that is not an image by its own
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    n, errors, _ = reg.add("C", [tmp_path / "gone.jpg", text, photos["C"][0][0]])
    assert n == 1 and len(errors) == 2
    assert errors[0].startswith(f"{tmp_path / 'gone.jpg'}: ") and errors[1].startswith(f"{text}: "), errors
    reg.close()


def test_register_with_reshots_indexes_listing_style_versions(tmp_path, photos):
    reg = Register.create(tmp_path / "reg", reshots=2)
    n, errors, _ = reg.add("A", [photos["A"][0][0], tmp_path / "missing.jpg"])
    assert n == 1 and len(errors) == 1 and "missing.jpg" in errors[0]  # one photo, indexed with its two re-shots
    assert reg.indexed_vectors == 3
    names = [r[0] for r in reg.db.execute("SELECT name FROM photos ORDER BY vector_id")]
    assert names[0] == photos["A"][0][0] and names[1:] == [f"{names[0]} [re-shot 1]", f"{names[0]} [re-shot 2]"]
    shas = [r[0] for r in reg.db.execute("SELECT sha256 FROM photos")]
    assert len(set(shas)) == 3  # three different images
    reg.add("B", photos["B"][0][:1])
    reg.close()
    reg = Register.open(tmp_path / "reg")
    assert reg.reshots == 2 and len(reg.index) == 6
    # the same photo gives the same re-shots (seeded by its content): a second register agrees
    other = Register.create(tmp_path / "reg2", reshots=2)
    other.add("A", [photos["A"][0][0]])
    assert [r[0] for r in other.db.execute("SELECT sha256 FROM photos")] == shas
    # an import counts the photos registered, not the re-shots made of them
    done = other.import_objects([("C", photos["C"][0], {})])
    assert (done["photos_added"], done["objects_added"], len(other.index)) == (2, 1, 9)
    assert other.import_objects([("C", photos["C"][0], {})])["already_registered"] == 2
    assert reg.search([photos["A"][1]], k=1)[0].matches[0].object_id == "A"
    assert reg.remove("A") == 1 and len(reg.index) == 3  # one photo, and its two re-shots with it


def test_register_cli_counts_photos_not_their_reshots(tmp_path, photos, capsys):
    """`register remove` said "removed with its 3 photo(s)" of an object of one photo and its two re-shots."""
    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg, "--reshots", "2"]) == 0
    capsys.readouterr()
    assert main(["-q", "register", "add", reg, "A", photos["A"][0][0]]) == 0
    assert "A: 1 photo(s) registered with 2 re-shot(s) each" in capsys.readouterr().out
    assert main(["-q", "register", "remove", reg, "A"]) == 0
    assert "A: removed with its 1 photo(s)" in capsys.readouterr().out
    assert Register.open(reg).history("A")[-1]["photos_removed"] == 1


def test_reshots_are_grouped_with_their_photo_and_scored_together(tmp_path, photos):
    reg = Register.create(tmp_path / "reg", reshots=2)
    reg.add("A", photos["A"][0])
    reg.add("B", photos["B"][0][:1])
    rows = reg.db.execute("SELECT vector_id, name, reshot_of FROM photos ORDER BY vector_id").fetchall()
    first, second = rows[0][0], rows[3][0]
    assert [r[2] for r in rows] == [None, first, first, None, second, second, None, rows[6][0], rows[6][0]]
    # list and get count the photos a user added, and the re-shots apart
    assert reg.list()[0]["photos"] == 2 and reg.list()[0]["reshots"] == 4
    assert reg.get("A")["photos"] == photos["A"][0] and reg.get("A")["reshots"] == 4

    # a photo's score is the mean of its two best-matching versions; the object's, its best photo's
    q, _ = reg.embedder.embed_files([photos["A"][1]])
    sims = reg.object_vectors("A") @ q[0]
    expected = max(np.sort(sims[:3])[-2:].mean(), np.sort(sims[3:])[-2:].mean())
    assert sims.max() > expected  # the rule differs from "best version" here
    match = reg.search_vectors(q, k=1)[0][0]
    assert match.object_id == "A" and match.similarity == pytest.approx(expected, abs=1e-5)
    # ... but a copy of a registered photo scores itself, not the mean with a re-shot
    copy = reg.search([photos["A"][0][0]], k=1)[0].matches[0]
    assert copy.object_id == "A" and copy.similarity == pytest.approx(1.0, abs=1e-4)


def test_register_from_before_reshot_groups_is_migrated(tmp_path, photos):
    import sqlite3

    reg = Register.create(tmp_path / "reg", reshots=1)
    reg.add("A", photos["A"][0])
    groups = reg.db.execute("SELECT reshot_of FROM photos ORDER BY vector_id").fetchall()
    reg.close()
    db = sqlite3.connect(tmp_path / "reg" / "register.sqlite")  # the schema of the previous version
    db.execute("DROP INDEX photos_reshot")
    db.execute("ALTER TABLE photos DROP COLUMN reshot_of")
    db.commit()
    db.close()
    again = Register.open(tmp_path / "reg")
    assert again.db.execute("SELECT reshot_of FROM photos ORDER BY vector_id").fetchall() == groups
    assert again.list()[0]["reshots"] == 2


def test_flip_embeds_a_photo_and_its_mirror_image_alike(tmp_path, photos):
    path = photos["A"][0][0]
    mirrored = tmp_path / "mirrored.png"
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    reg = Register.create(tmp_path / "reg", flip=True)
    v, _ = reg.embedder.embed_files([path, str(mirrored)])
    assert np.allclose(v[0], v[1], atol=1e-4) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    plain_embedder = Register.create(tmp_path / "plain").embedder
    plain = plain_embedder.embed_files([path, str(mirrored)])[0]
    assert not np.allclose(plain[0], plain[1], atol=1e-3)  # without it the mirror image differs
    said = plain_embedder.describe()  # what `register info` and a register's settings say of the vectors
    assert said["layer"].startswith("backbone output: global average pool") and said["dim"] == 1280
    assert (said["pooling"], said["normalisation"], said["flip"]) == ("mean over spatial positions", "L2", False)
    reg.add("A", [path])
    reg.close()
    again = Register.open(tmp_path / "reg")
    assert again.embedder.flip and json.loads(again.setting("embedder"))["flip"] is True
    assert again.search([str(mirrored)], k=1)[0].matches[0].similarity == pytest.approx(1.0, abs=1e-4)


def test_tiles_are_cut_from_a_photo_decoded_large_enough_to_keep_their_detail(photos, monkeypatch):
    import artsentry.index.embedder as embedder_module
    from artsentry.index.embedder import Embedder
    from artsentry.lots import TILE_FRACTION

    embedder = Embedder.from_spec("pretrained:efficientnet_lite0")
    seen = []
    real = embedder_module.iter_image_batches
    monkeypatch.setattr(embedder_module, "iter_image_batches",
                        lambda sources, transform, pre, **kw: seen.append(pre.input_size) or real(sources, transform,
                                                                                                 pre, **kw))
    whole, _ = embedder.embed_files([photos["A"][0][0]])
    tiled, _ = embedder.embed_files([photos["A"][0][0]], tiles=2)
    assert seen == [224, round(224 / TILE_FRACTION)] and TILE_FRACTION < 1
    assert whole.shape == (1, 1280) and tiled.shape == (1, 5, 1280)  # the whole photo, then its 4 tiles
    assert np.allclose(tiled[0, 0], whole[0], atol=1e-4)


def test_a_register_reads_photos_as_it_was_made_to(tmp_path, photos, model_dir, capsys):
    """New registers on the pretrained backbone fit photos (cut to 4:3 or 3:4, then squashed); a register
    keeps its mode for every photo it embeds, also one made before the mode existed (squash)."""
    wide = tmp_path / "wide.png"
    photo = Image.open(photos["A"][0][0]).convert("RGB")
    canvas = Image.new("RGB", (photo.width * 2, photo.height), (255, 255, 255))
    canvas.paste(photo, (photo.width // 2, 0))
    canvas.save(wide)
    assert main(["-q", "register", "create", str(tmp_path / "new")]) == 0
    assert "photos read with fit" in capsys.readouterr().out
    reg = Register.open(tmp_path / "new")
    assert reg.embedder.preprocessing.resize == "fit"
    assert json.loads(reg.setting("embedder"))["preprocessing"]["resize"] == "fit"
    reg.add("A", [photos["A"][0][0]])
    fit_sim = reg.search([str(wide)], k=1)[0].matches[0].similarity
    old = Register.create(tmp_path / "old", resize="squash")  # as every register made before 2026-12-04
    old.add("A", [photos["A"][0][0]])
    old.close()
    old = Register.open(tmp_path / "old")
    assert old.embedder.preprocessing.resize == "squash"
    # the photo in a 2:1 frame: fit reads the centre, where the photo is; squash squeezes it
    assert fit_sim > old.search([str(wide)], k=1)[0].matches[0].similarity
    assert Register.create(tmp_path / "model", str(model_dir)).embedder.preprocessing.resize == "fit"  # the model's own
    with pytest.raises(RegisterError, match="resize must be one of"):
        Register.create(tmp_path / "bad", resize="stretch")


def test_a_register_refuses_an_embedder_whose_weights_changed_since_its_vectors(tmp_path, photos, model_dir,
                                                                                   capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    embedder = tmp_path / "embedder"
    shutil.copytree(model_dir, embedder)
    original = (embedder / "model.safetensors").read_bytes()
    reg = Register.create(tmp_path / "reg", str(embedder))
    reg.add("A", [photos["A"][0][0]])
    reg.close()
    assert Register.open(tmp_path / "reg").search([photos["A"][1]], k=1)[0].matches[0].object_id == "A"
    # the model trained again in its folder: the register's vectors are of the old network
    state = load_file(embedder / "model.safetensors")
    first = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[first] = state[first] * 1.5
    save_file(state, embedder / "model.safetensors")
    with pytest.raises(RegisterError, match="other weights than the ones its vectors were made with"):
        Register.open(tmp_path / "reg").search([photos["A"][1]], k=1)
    with pytest.raises(RegisterError, match="other weights"):
        Register.open(tmp_path / "reg").add("B", [photos["B"][0][0]])
    assert main(["-q", "register", "search", str(tmp_path / "reg"), str(photos["A"][1])]) != 0
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "other weights" in line]) == 1 and "Traceback" not in err
    # info still shows what the register holds, then says why it cannot search
    assert main(["-q", "register", "info", str(tmp_path / "reg")]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("objects\t1\nphotos\t1 ") and f"embedder\t{embedder.resolve()}" in out
    assert err.startswith("artsentry register: error: ") and "other weights" in err
    # screening and the server refuse it before their first photo
    folder = Path(photos["A"][0][0]).parent
    assert main(["-q", "screen", str(folder), "--out", str(tmp_path / "screen"), "--model", "none",
                 "--register", str(tmp_path / "reg")]) != 0
    assert "other weights" in capsys.readouterr().err and not (tmp_path / "screen" / "results.csv").exists()
    from artsentry.serve import Analyzer, ServeSettings

    with pytest.raises(RegisterError, match="other weights"):
        Analyzer(ServeSettings(register=tmp_path / "reg"))
    # the way on: the same objects and photos embedded with the weights as they are now
    assert main(["-q", "register", "copy", str(tmp_path / "reg"), str(tmp_path / "again")]) == 0
    assert "copied 1 object(s), 1 photo(s)" in capsys.readouterr().out
    again = Register.open(tmp_path / "again")
    assert again.search([photos["A"][1]], k=1)[0].matches[0].object_id == "A"
    assert json.loads(again.setting("embedder"))["weights_sha256"] != json.loads(
        Register.open(tmp_path / "reg").setting("embedder"))["weights_sha256"]
    again.close()
    (embedder / "model.safetensors").write_bytes(original)  # the weights put back: searches again
    assert Register.open(tmp_path / "reg").search([photos["A"][1]], k=1)[0].matches[0].object_id == "A"
    # a register made before the weights were recorded is read as before
    db = sqlite3.connect(tmp_path / "reg" / "register.sqlite")
    described = json.loads(db.execute("SELECT value FROM settings WHERE key = 'embedder'").fetchone()[0])
    del described["weights_sha256"]
    db.execute("UPDATE settings SET value = ? WHERE key = 'embedder'", (json.dumps(described),))
    db.commit()
    db.close()
    save_file(state, embedder / "model.safetensors")
    assert Register.open(tmp_path / "reg").search([photos["A"][1]], k=1)[0].matches


def test_copy_embeds_every_photo_again_keeps_the_metadata_and_names_what_it_left_out(tmp_path, photos, capsys):
    import shutil

    from artsentry.index.register import DB_NAME

    work = tmp_path / "photos"
    work.mkdir()
    for name in ("A", "B", "C"):
        for i, path in enumerate(photos[name][0]):
            shutil.copy(path, work / f"{name}{i}.jpg")
    reg = Register.create(tmp_path / "old", reshots=1, scoring="similarity", resize="squash")
    reg.add("A", [str(work / "A0.jpg"), str(work / "A1.jpg")], title="Ivory figure", status="stolen", lot="7")
    reg.add("B", [str(work / "B0.jpg")])
    reg.add("C", [str(work / "C0.jpg")])
    reg.add("D", [(work / "C1.jpg").read_bytes()])  # bytes through the library: no file to read again
    stored = tmp_path / "old" / "photos" / "upload.jpg"  # as the server keeps an uploaded photo
    stored.parent.mkdir()
    shutil.copy(work / "B1.jpg", stored)
    reg.add("B", [str(stored)])
    reg.set_threshold(0.3)
    reg.close()
    before = (tmp_path / "old" / DB_NAME).read_bytes()
    (work / "A1.jpg").unlink()  # gone
    shutil.copy(work / "B0.jpg", work / "C0.jpg")  # other bytes under the registered name
    assert main(["-q", "register", "copy", str(tmp_path / "old"), str(tmp_path / "new"),
                 "--embedder", "pretrained:efficientnet_lite0"]) == 3
    out, err = capsys.readouterr()
    assert f"{work / 'A1.jpg'}: not copied: the file is gone (object A)" in err
    assert f"{work / 'C0.jpg'}: not copied: the file holds other bytes than were registered (object C)" in err
    assert "<bytes 0>: not copied: it was registered from bytes, not a file (object D)" in err
    assert out.startswith(f"copied 2 object(s), 3 photo(s) into {tmp_path / 'new'} (embedder "
                          "pretrained:efficientnet_lite0); 2 object(s) not copied, none of their photos read again: "
                          "C, D")
    assert (tmp_path / "old" / DB_NAME).read_bytes() == before  # the old register is not changed
    new = Register.open(tmp_path / "new")
    a = new.get("A")
    assert (a["title"], a["status"], a["lot"], a["photos"], a["reshots"]) == (
        "Ivory figure", "stolen", "7", [str(work / "A0.jpg")], 1)
    # the server's stored photo now lives beside the new register
    assert new.get("B")["photos"] == [str(work / "B0.jpg"), str((tmp_path / "new" / "photos" / "upload.jpg"))]
    assert (tmp_path / "new" / "photos" / "upload.jpg").read_bytes() == stored.read_bytes()
    assert new.threshold is None and new.reshots == 1 and new.scoring == "similarity"
    assert new.embedder.preprocessing.resize == "fit"  # another embedder given: read its own way
    assert new.search([photos["A"][1]], k=1)[0].matches[0].object_id == "A"
    assert new.history()[-1]["action"] == "copy" and new.history()[-1]["objects_left_out"] == ["C", "D"]
    new.close()
    assert main(["-q", "register", "history", str(tmp_path / "new")]) == 0  # its copy entry printed with the rest
    last = capsys.readouterr().out.splitlines()[-1].split("\t")
    assert last[2] == "copy" and json.loads(last[4])["photos_copied"] == 3
    assert main(["-q", "register", "copy", str(tmp_path / "old"), str(tmp_path / "new")]) == 1
    assert "a register already exists" in capsys.readouterr().err
    same = Register.open(tmp_path / "old").copy_to(tmp_path / "same")  # its own embedder: read as before
    assert same["objects"] == 2 and Register.open(tmp_path / "same").embedder.preprocessing.resize == "squash"
    shutil.rmtree(work)
    stored.unlink()
    none = Register.open(tmp_path / "old").copy_to(tmp_path / "none")  # no photo left to read: an empty register
    assert (none["objects"], none["photos"], none["objects_left_out"]) == (0, 0, ["A", "B", "C", "D"])
    assert len(none["problems"]) == 6 and len(Register.open(tmp_path / "none")) == 0


def test_a_copy_stopped_half_way_goes_on_when_run_again(tmp_path, photos, monkeypatch, capsys):
    reg = abc_register(tmp_path / "old", photos)
    real = Register._register
    calls = []

    def stopped(self, objects, progress=False):  # the first chunk registered, then Ctrl-C
        calls.append(len(objects))
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real(self, objects, progress)

    monkeypatch.setattr("artsentry.index.register.Register.import_objects",
                        lambda self, objects, **kw: (stopped(self, objects[:1]), stopped(self, objects[1:])))
    with pytest.raises(KeyboardInterrupt):
        reg.copy_to(tmp_path / "new")
    monkeypatch.undo()
    assert [o["object_id"] for o in Register.open(tmp_path / "new").list()] == ["A"]
    with pytest.raises(RegisterError, match="an unfinished copy of this one with the embedder "
                                            "pretrained:efficientnet_lite0: run the copy again"):
        reg.copy_to(tmp_path / "new", "pretrained:efficientnet_lite1")
    done = reg.copy_to(tmp_path / "new")  # goes on: A's photos are not registered twice
    assert (done["objects"], done["photos"], done["problems"]) == (3, 6, [])
    new = Register.open(tmp_path / "new")
    assert [o["photos"] for o in new.list()] == [2, 2, 2]
    assert [h["action"] for h in new.history()] == ["create", "copy_started", "add", "add", "add", "copy"]
    new.close()
    with pytest.raises(RegisterError, match=r"a register already exists$"):  # finished: not copied into again
        reg.copy_to(tmp_path / "new")
    abc_register(tmp_path / "other", photos).close()
    with pytest.raises(RegisterError, match=r"a register already exists$"):
        Register.open(tmp_path / "other").copy_to(tmp_path / "new")


def test_contrast_scores_subtract_half_the_mean_of_the_next_four_objects():
    sims = np.array([0.9, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    got = contrast_scores(sims)
    assert got[0] == pytest.approx(0.9 - 0.5 * np.mean([0.6, 0.5, 0.4, 0.3]))
    assert got[1] == pytest.approx(0.6 - 0.5 * np.mean([0.9, 0.5, 0.4, 0.3]))  # others include the best
    assert got[6] == pytest.approx(0.1 - 0.5 * np.mean([0.9, 0.6, 0.5, 0.4]))
    assert np.all(np.diff(got) < 0)  # the order of the similarities is kept
    # an object alone among look-alikes scores less than the same similarity standing out
    crowd = contrast_scores(np.array([0.8, 0.78, 0.77, 0.76, 0.75]))[0]
    alone = contrast_scores(np.array([0.8, 0.4, 0.35, 0.3, 0.3]))[0]
    assert alone > crowd
    # fewer objects: the others there are; one object: its similarity
    assert contrast_scores(np.array([0.7, 0.5]))[0] == pytest.approx(0.45)
    assert contrast_scores(np.array([0.7]))[0] == pytest.approx(0.7)
    rows = np.array([[0.9, 0.6, 0.5, 0.4, 0.3], [0.8, 0.7, 0.2, 0.1, 0.0]])
    assert np.allclose(contrast_scores(rows), [contrast_scores(r) for r in rows])
    rows = np.array([[0.9, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], [0.8, 0.7, 0.2, 0.1, 0.0, -0.1, -0.2]])  # objects past the 5th
    assert np.allclose(contrast_scores(rows), [contrast_scores(r) for r in rows])


def test_register_scores_matches_by_contrast_and_keeps_similarity(tmp_path, photos):
    reg = Register.create(tmp_path / "reg")
    assert reg.scoring == "contrast"
    for name in "ABC":
        reg.add(name, photos[name][0])
    res = reg.search([photos["A"][1]], k=3)[0]
    sims = np.array([m.similarity for m in res.matches])
    assert [m.object_id for m in res.matches][0] == "A" and np.all(np.diff(sims) <= 0)
    assert [m.score for m in res.matches] == pytest.approx(contrast_scores(sims).tolist(), abs=1e-5)
    # the threshold applies to the score, not the similarity
    best = res.matches[0]
    assert best.score < best.similarity
    assert reg.search([photos["A"][1]], threshold=best.score + 1e-3)[0].no_match
    assert not reg.search([photos["A"][1]], threshold=best.score - 1e-3)[0].no_match
    with pytest.raises(RegisterError, match="scoring must be one of"):
        Register.create(tmp_path / "bad", scoring="cosine")

    plain = Register.create(tmp_path / "plain", scoring="similarity")
    for name in "ABC":
        plain.add(name, photos[name][0])
    m = plain.search([photos["A"][1]], k=3)[0].matches
    assert [x.score for x in m] == [x.similarity for x in m] == pytest.approx(sims.tolist(), abs=1e-5)


def test_register_from_before_contrast_scoring_keeps_deciding_on_similarity(tmp_path, photos):
    reg = Register.create(tmp_path / "reg", threshold=0.5)
    reg.add("A", photos["A"][0])
    reg.add("B", photos["B"][0])
    reg.db.execute("DELETE FROM settings WHERE key = 'scoring'")  # as written by the previous version
    reg.close()
    again = Register.open(tmp_path / "reg")
    assert again.scoring == "similarity"  # its threshold was chosen on similarities
    m = again.search([photos["A"][1]], k=2)[0].matches
    assert [x.score for x in m] == [x.similarity for x in m]


def _object_table(tmp_path, photos):
    """A catalogue of the three objects, photos relative to the table, with the rows a real one has."""
    import shutil

    import pandas as pd

    pics = tmp_path / "catalogue" / "pics"
    pics.mkdir(parents=True)
    rows = []
    for name in "ABC":
        for k, p in enumerate(photos[name][0]):
            shutil.copy(p, pics / f"{name}_{k}.jpg")
            rows.append({"accession_number": f"1999.{name}", "Image": f"pics/{name}_{k}.jpg",
                         "Title": f"Object {name}" if k == 0 else "", "status": "stolen", "inventory": f"inv-{name}"})
    rows += [{"accession_number": "1999.A", "Image": "pics/A_0.jpg", "Title": "", "status": "", "inventory": ""},
             {"accession_number": "", "Image": "pics/A_1.jpg", "Title": "", "status": "", "inventory": ""},
             {"accession_number": "1999.D", "Image": "https://example.org/d.jpg", "Title": "", "status": "",
              "inventory": ""},
             {"accession_number": "1999.E", "Image": "pics/missing.jpg", "Title": "", "status": "", "inventory": ""}]
    path = tmp_path / "catalogue" / "objects.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_import_fetches_photo_urls_keeps_their_bytes_and_names_each_url_in_the_history(tmp_path, photos, capsys):
    """A stolen-object database's export names its photos by URL: register import --fetch-urls downloads
    them (private addresses only with --fetch-private), keeps their bytes in the register's photos/, names
    each photo's URL in the history, says which URLs failed (by URL), leaves no file for a photo not
    registered, and fetches no registered URL again when run again."""
    from artsentry.index.register import read_objects

    from .conftest import files_host

    (a0, a1), (b0, _) = photos["A"][0], photos["B"][0]
    serving = {"/a0.jpg": Path(a0).read_bytes(), "/a1.jpg": Path(a1).read_bytes(), "/b0.jpg": Path(b0).read_bytes(),
               "/page.jpg": b"<!doctype html><html><body>Sign in to see this photo</body></html>",
               "/broken.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 300,
               "/copy-of-b0.jpg": Path(b0).read_bytes()}  # E: recorded twice, under B too (the same bytes)
    seen: list[str] = []
    reg = tmp_path / "reg"
    assert main(["-q", "register", "create", str(reg)]) == 0
    table, local = tmp_path / "stolen.csv", tmp_path / "A_side.jpg"  # a photo the museum holds as a file
    Image.open(a0).rotate(90, expand=True).save(local)
    with files_host(serving, seen) as (base, _):
        pd.DataFrame({"object_id": ["A", "A", "A", "B", "B", "C", "C", "E"],  # an export's column name
                      "image_url": [f"{base}/a0.jpg", f"{base}/a1.jpg", str(local), f"{base}/b0.jpg", f"{base}/broken.jpg",
                                f"{base}/gone.jpg", f"{base}/page.jpg", f"{base}/copy-of-b0.jpg"]}).to_csv(table,
                                                                                                       index=False)
        assert main(["-q", "register", "import", str(reg), str(table), "--fetch-private"]) == 1
        assert "--fetch-private applies to the photos --fetch-urls downloads" in capsys.readouterr().err
        # without --fetch-urls: each URL said, the photo from a file registered
        assert main(["-q", "register", "import", str(reg), str(table)]) == 3
        out, err = capsys.readouterr()
        assert "imported 1 photo(s), 1 new object(s)" in out and err.count("import with --fetch-urls") == 7
        # the shop's test host is on this machine: refused unless allowed
        assert main(["-q", "register", "import", str(reg), str(table), "--fetch-urls"]) == 3
        out, err = capsys.readouterr()
        assert "imported 0 photo(s)" in out and err.count("not fetched (--fetch-private") == 7 and not seen
        assert "1 photo(s) already registered" in out  # the file; no URL counted among them
        opened = Register.open(reg)  # the library refuses them too unless told
        assert "not fetched (--fetch-private" in opened.import_objects([("Z", [f"{base}/a0.jpg"], {})])["errors"][0]
        opened.close()
        assert main(["-q", "register", "import", str(reg), str(table), "--fetch-urls", "--fetch-private"]) == 3
        out, err = capsys.readouterr()
        assert "imported 4 photo(s), 2 new object(s) of the 4" in out and "1 photo(s) already registered" in out
        assert f"{base}/gone.jpg: HTTP 404" in err and f"{base}/page.jpg: not an image: its content is HTML/XML text" in err
        assert f"{base}/broken.jpg: " in err and "photos/" not in err  # its error names the URL, not the file
        assert sorted(seen) == sorted([*serving, "/gone.jpg"])
        shas = {path: file_sha256(p) for path, p in (("/a0.jpg", a0), ("/a1.jpg", a1), ("/b0.jpg", b0))}
        # the fetched bytes kept, by SHA-256, and nothing else (the broken photo's file removed again)
        assert sorted(p.name for p in (reg / "photos").iterdir()) == sorted(f"{s}.jpeg" for s in shas.values())
        opened = Register.open(reg)
        assert opened.get("A")["photos"] == [str(local.resolve()),
                                             *(str((reg / "photos" / f"{shas[p]}.jpeg").resolve())
                                               for p in ("/a0.jpg", "/a1.jpg"))]
        assert [r.matches[0].object_id for r in opened.search([photos["A"][1], photos["B"][1]], k=1)] == ["A", "B"]
        urls = {e["object_id"]: e["urls"] for e in opened.history() if "urls" in e}
        assert urls == {"A": {shas["/a0.jpg"]: f"{base}/a0.jpg", shas["/a1.jpg"]: f"{base}/a1.jpg"},
                        "B": {shas["/b0.jpg"]: f"{base}/b0.jpg"}, "E": {shas["/b0.jpg"]: f"{base}/copy-of-b0.jpg"}}
        # each photo's URL beside it (none for the file), and carried by a copy of the register
        assert opened.get("A")["photo_urls"] == [None, f"{base}/a0.jpg", f"{base}/a1.jpg"]
        assert opened.get("E")["photo_urls"] == [f"{base}/copy-of-b0.jpg"]
        opened.copy_to(tmp_path / "copy")
        copied = Register.open(tmp_path / "copy")
        assert copied.get("A")["photo_urls"] == [None, f"{base}/a0.jpg", f"{base}/a1.jpg"]
        extra = copied.db.execute("SELECT extra FROM objects WHERE object_id = 'A'").fetchone()[0]
        assert "photo_urls" not in json.loads(extra or "{}")  # not copied as the object's metadata besides
        copied.close()
        opened.close()
        # run again: the registered URLs are not fetched again, the failed ones are tried again
        seen.clear()
        assert main(["-q", "register", "import", str(reg), str(table), "--fetch-urls", "--fetch-private"]) == 3
        out = capsys.readouterr().out
        assert "imported 0 photo(s)" in out and "5 photo(s) already registered" in out
        assert sorted(seen) == ["/broken.jpg", "/gone.jpg", "/page.jpg"]
    # read_objects alone: an ftp:// URL is no http(s) one, fetched or not
    ftp = tmp_path / "ftp.csv"
    pd.DataFrame({"object_id": ["D", "D"], "image": ["ftp://example.org/d.jpg", "https://example.org/d.jpg"]}).to_csv(
        ftp, index=False)
    objects, problems = read_objects(ftp, fetch_urls=True)
    assert objects == [("D", ["https://example.org/d.jpg"], {})] and "only http(s) URLs are fetched" in problems[0]
    # a database's JSON export: records under a key, camelCase names, each photo an image object
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"count": 1, "records": [{"objectNumber": "1999.7", "objectId": "F", "images": [
        {"imageUrl": "https://example.org/f1.jpg", "caption": "front"}, {"imageUrl": "https://example.org/f2.jpg"}]}]}))
    assert read_objects(export, fetch_urls=True)[0] == [
        ("F", ["https://example.org/f1.jpg", "https://example.org/f2.jpg"], {"objectNumber": "1999.7"})]
    # an image object offering the photo in sizes: the largest; two photos' URLs in one object: refused
    export.write_text(json.dumps([{"Object Number": "F", "images": [{"thumb": "https://example.org/t.jpg",
                                                               "full": "https://example.org/f.jpg", "width": 800}]}]))
    assert read_objects(export, fetch_urls=True)[0] == [("F", ["https://example.org/f.jpg"], {})]
    export.write_text(json.dumps([{"Object Number": "F", "images": [{"front": "https://example.org/a.jpg",
                                                               "back": "https://example.org/b.jpg", "width": 800}]}]))
    with pytest.raises(RegisterError, match=r"record 1: an image object with 2 URLs \(keys: front, back, width\)"):
        read_objects(export, fetch_urls=True)


def test_import_registers_a_workbooks_pictures_and_keeps_them_in_the_register(tmp_path, photos, capsys):
    """A stolen-object list kept in Excel, each photo a picture placed on the row's photo cell: every row was "no
    photo: skipped". The pictures are now the objects' photos, kept in the register's photos/ (the workbook may
    be gone tomorrow); one on a row not registered (no object id) leaves no file; a rerun adds nothing."""
    from .conftest import workbook_with_pictures

    (a0, a1), (b0, b1) = photos["A"][0], photos["B"][0]
    book = workbook_with_pictures(tmp_path / "stolen.xlsx", ["Object Number", "Title", "Photo"],
                                  [["A", "red vase", None], ["A", "red vase", None], ["B", "green box", None],
                                   ["", "unnumbered", None]],
                                  {"C2": a0, "C3": a1, "C4": b0, "C5": b1})
    reg = tmp_path / "reg"
    assert main(["-q", "register", "create", str(reg)]) == 0
    assert main(["-q", "register", "import", str(reg), str(book)]) == 3  # the unnumbered row: said, not registered
    out, err = capsys.readouterr()
    assert "imported 3 photo(s), 2 new object(s)" in out and "row 5" in err
    kept = {p.name.split(".")[0] for p in (reg / "photos").iterdir()}
    assert kept == {file_sha256(p) for p in (a0, a1, b0)}  # b1's picture, on the unnumbered row: none
    r = Register.open(reg)
    assert r.get("B")["title"] == "green box"
    assert [Path(p).parent for p in r.get("A")["photos"]] == [(reg / "photos").resolve()] * 2
    r.close()
    assert main(["-q", "register", "import", str(reg), str(book)]) == 3
    assert "imported 0 photo(s), 0 new object(s)" in capsys.readouterr().out
    assert {p.name.split(".")[0] for p in (reg / "photos").iterdir()} == kept


def test_import_fetches_the_next_chunks_urls_while_one_chunk_is_embedded(tmp_path, photos, monkeypatch):
    """A host's latency is hidden behind the model: chunk k+1's URLs are requested as chunk k is
    registered, not after it."""
    import threading
    import time

    from artsentry.index.register import read_objects

    from .conftest import reply, web_host

    served = {f"/{name}.jpg": Path(photos[name][0][0]).read_bytes() for name in "ABC"}
    served["/D.jpg"] = Path(photos["C"][0][1]).read_bytes()
    asked: dict[str, float] = {}

    def respond(request):
        asked[request.path] = time.monotonic()
        reply(request, 200 if request.path in served else 404, served.get(request.path, b""))

    spans = []
    real = Register._register

    def slow(self, objs, **kw):  # a chunk's embedding, made long enough to see what happens beside it
        t0 = time.monotonic()
        time.sleep(0.6)
        try:
            return real(self, objs, **kw)
        finally:
            spans.append((t0, time.monotonic(), [o for o, _, _ in objs]))

    monkeypatch.setattr(Register, "_register", slow)
    reg = Register.create(tmp_path / "reg")
    table = tmp_path / "urls.csv"
    with web_host(respond) as (base, _):
        pd.DataFrame({"object_id": list("ABCDD"), "image": [*(f"{base}/{n}.jpg" for n in "ABCD"), photos["B"][0][1]]}
                     ).to_csv(table, index=False)  # one of D's photos a file: a chunk of both
        done = reg.import_objects(read_objects(table, fetch_urls=True)[0], chunk_photos=1, allow_private=True)
        ends = []  # the progress bar's count of URLs fetched: one a URL, fetched or not
        answers = Register._fetch_urls([("X", [f"{base}/A.jpg", f"{base}/A.jpg", f"{base}/nope.jpg"], {})], True,
                                       lambda: ends.append(1))
        assert len(ends) == 2 and answers[f"{base}/nope.jpg"] == (None, f"{base}/nope.jpg: HTTP 404")
        before = dict(asked)  # an import stopped: the URLs not yet asked are not
        stopped = threading.Event()
        stopped.set()
        answers = Register._fetch_urls([("X", [f"{base}/A.jpg", f"{base}/B.jpg"], {})], True, None, stopped)
        assert asked == before and answers[f"{base}/B.jpg"] == (None, f"{base}/B.jpg: not fetched: the import stopped")
    assert done["photos_added"] == 5 and [objs for _, _, objs in spans] == [["A"], ["B"], ["C"], ["D"]]
    assert len(reg.get("D")["photos"]) == 2
    # B's URL asked before A's chunk was registered (as it began, not once it ended), C's before B's was
    assert asked["/B.jpg"] < spans[0][1] - 0.3 and asked["/C.jpg"] < spans[1][1] - 0.3


def test_import_registers_a_catalogue_once_however_often_it_runs(tmp_path, photos, capsys, monkeypatch):
    from artsentry.index.register import read_objects

    monkeypatch.chdir(tmp_path)  # relative photo paths are read against the table, not the working folder
    table = _object_table(tmp_path, photos)
    objects, problems = read_objects(table)
    assert [(o, len(p)) for o, p, _ in objects] == [("1999.A", 3), ("1999.B", 2), ("1999.C", 2), ("1999.E", 1)]
    assert objects[0][2] == {"title": "Object A", "status": "stolen", "inventory": "inv-A"}
    assert len(problems) == 2 and "line 9: no object id" in problems[0] and "download it first" in problems[1]

    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg]) == 0
    calls = []
    real = Register._register  # one call a chunk: one transaction and one index write
    monkeypatch.setattr(Register, "_register", lambda self, objs, **kw: calls.append(len(objs)) or real(self, objs))
    assert main(["-q", "register", "import", reg, str(table)]) == 3  # the bad rows and the missing file
    out, err = capsys.readouterr()
    assert "imported 6 photo(s), 3 new object(s) of the 4 in" in out and "1 photo(s) already registered" in out
    assert "missing.jpg: file not found" in err and "line 9: no object id" in err
    opened = Register.open(reg)
    assert [(o["object_id"], o["photos"], o["title"], o["status"]) for o in opened.list()] == [
        ("1999.A", 2, "Object A", "stolen"), ("1999.B", 2, "Object B", "stolen"), ("1999.C", 2, "Object C", "stolen")]
    assert opened.get("1999.B")["inventory"] == "inv-B"
    assert [r.matches[0].object_id for r in opened.search([photos[n][1] for n in "ABC"], k=1)] == \
        ["1999.A", "1999.B", "1999.C"]
    opened.close()
    # run again (an interrupted import, or a catalogue with more rows): nothing is registered twice
    assert main(["-q", "register", "import", reg, str(table)]) == 3
    assert "imported 0 photo(s), 0 new object(s)" in capsys.readouterr().out
    assert sum(o["photos"] for o in Register.open(reg).list()) == 6
    # a small chunk size: one transaction per chunk, the same register
    calls.clear()
    small = Register.create(tmp_path / "small")
    done = small.import_objects(read_objects(table)[0], chunk_photos=2)
    assert calls == [1, 1, 1, 1] and done["photos_added"] == 6 and done["objects_added"] == 3
    assert [o["photos"] for o in small.list()] == [2, 2, 2]
    # objects share a chunk while they fit (C's 2 photos and E's 1 in 3), and an object larger
    # than a chunk goes whole into its own
    for chunk, expected in ((3, [1, 1, 2]), (1, [1, 1, 1, 1])):
        calls.clear()
        part = Register.create(tmp_path / f"chunk{chunk}")
        assert part.import_objects(read_objects(table)[0], chunk_photos=chunk)["photos_added"] == 6
        assert calls == expected


def test_import_of_a_crawls_collection_keeps_the_objects_fields_not_one_photos(tmp_path, photos, caplog):
    """A crawl's collection.csv has one row per photo: its url, sha256, image_index and image_kind are the
    photo's. They were kept as the object's metadata from its first row (one photo's address and hash shown
    as the object's); columns that differ between an object's rows are now left out, with a warning."""
    import pandas as pd

    from artsentry.index.register import read_objects

    rows = [{"path": photos[n][0][k], "object_id": oid, "image_index": k, "image_kind": "primary" if k == 0 else
             "additional", "url": f"https://images.example/{oid}/{k}.jpg", "sha256": f"{oid}{k}" * 8,
             "title": f"Object {n}", "medium": "Ivory", "department": "Asian Art"}
            for oid, n in ((11, "A"), (12, "B")) for k in range(2)]
    rows.append({**rows[0], "path": photos["C"][0][0], "object_id": 13, "url": "https://images.example/13/0.jpg"})
    pd.DataFrame(rows).to_csv(tmp_path / "collection.csv", index=False)
    objects, problems = read_objects(tmp_path / "collection.csv")
    assert problems == [] and [(o, len(p)) for o, p, _ in objects] == [("11", 2), ("12", 2), ("13", 1)]
    assert [meta for _, _, meta in objects] == [{"title": f"Object {n}", "medium": "Ivory", "department": "Asian Art"}
                                                for n in "ABA"]
    assert caplog.messages == [f"{tmp_path / 'collection.csv'}: column(s) image_index, image_kind, url, sha256 "
                               "differ between one object's photos (e.g. object 11's), so they describe the photos, "
                               "not the object: not kept as its metadata"]


def test_import_reports_a_photo_path_holding_a_nul_character_and_registers_the_rest(tmp_path, photos, capsys):
    """A catalogue row whose photo cell holds a NUL character (a damaged export) ended the import with
    'embedded null byte', naming nothing and registering nothing."""
    import pandas as pd

    table = tmp_path / "catalogue.csv"
    pd.DataFrame({"object_id": ["A", "B"], "image": [str(tmp_path / "a\0b.jpg"), photos["B"][1]]}).to_csv(table,
                                                                                                    index=False)
    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg]) == 0
    assert main(["-q", "register", "import", reg, str(table)]) == 3
    out, err = capsys.readouterr()
    assert "imported 1 photo(s), 1 new object(s) of the 2 in" in out
    assert f"{tmp_path / 'a'}\\x00b.jpg: its path holds a NUL character" in err  # control characters escaped
    assert [o["object_id"] for o in Register.open(reg).list()] == ["B"]


def test_import_chunks_grow_with_the_register(tmp_path, monkeypatch):
    """Each chunk of an import is a transaction and a write of the whole index file (1 GB at 200,000
    vectors): chunks grow to an eighth of the register as it grows. The size was computed once, before
    the import, so a large import into a new register wrote the index once per 512 photos throughout."""
    reg = Register.create(tmp_path / "reg")
    chunks = []

    def register(objs, **kw):  # as _register does, without embedding: one unit vector a photo
        n = sum(len(p) for _, p, _ in objs)
        chunks.append(n)
        reg.index.add(np.arange(len(reg.index), len(reg.index) + n), _unit_vectors(n, reg.dim, seed=len(chunks)))
        return n, [], 0

    monkeypatch.setattr(reg, "_register", register)
    objects = [(f"O{i}", [f"photo {i}".encode()], {}) for i in range(400)]
    assert reg.import_objects(objects, chunk_photos=4)["photos_added"] == 400
    assert sum(chunks) == 400 and chunks[:8] == [4] * 8  # an eighth of 32 is 4 still
    assert chunks[:-1] == sorted(chunks[:-1]) and max(chunks) > 32 and len(chunks) < 40  # 100 of 4 before
    reg.close()


def test_import_from_a_folder_of_object_folders(tmp_path, photos, capsys):
    import shutil

    root = tmp_path / "objects"
    for name in "AB":
        (root / f"obj-{name}").mkdir(parents=True)
        for p in photos[name][0]:
            shutil.copy(p, root / f"obj-{name}")
    (root / "empty").mkdir()
    shutil.copy(photos["unknown"], root)  # a loose photo: belongs to no object
    import os

    shutil.copy(photos["C"][0][0], os.fsdecode(bytes(root / "obj-B") + b"/caf\xe9.jpg"))  # a Latin-1 name
    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg]) == 0
    assert main(["-q", "register", "import", reg, str(root)]) == 3
    out, err = capsys.readouterr()
    assert "imported 4 photo(s), 2 new object(s) of the 2" in out
    assert "empty: no image files" in err and "1 photo(s) lie outside any object folder" in err
    assert f"{root}/obj-B/caf\\xe9.jpg: not registered: its file name is not UTF-8" in err
    assert [o["object_id"] for o in Register.open(reg).list()] == ["obj-A", "obj-B"]
    clean = tmp_path / "clean"  # a folder with nothing to complain of: exit status 0
    shutil.copytree(root / "obj-A", clean / "obj-D")
    assert main(["-q", "register", "import", reg, str(clean)]) == 0
    assert capsys.readouterr().err == ""
    with pytest.raises(RegisterError, match="no object folders with photos"):
        from artsentry.index.register import read_objects

        read_objects(root / "empty")


def test_tile_search_finds_a_registered_object_among_others(tmp_path, photos, capsys):
    reg_dir = tmp_path / "reg"
    reg = abc_register(reg_dir, photos)
    # a seller's table: object A (photographed again) in the bottom-right quarter, three unknown things
    lot = register_lot(photos)
    path = tmp_path / "lot.png"
    lot.save(path)
    with pytest.raises(RegisterError, match="no lot threshold"):
        reg.search([str(path)], lots=True)
    whole = reg.search([str(path)], k=3, threshold=-1.0)[0]
    tiled = reg.search([str(path)], k=3, threshold=-1.0, lots=True)[0]
    assert tiled.matches[0].object_id == "A" and tiled.matches[0].box == (0.5, 0.5, 1.0, 1.0)
    a_whole = next(m for m in whole.matches if m.object_id == "A")
    assert tiled.matches[0].score > a_whole.score and a_whole.box is None  # the tile sees A better than the table
    assert [m.object_id for m in tiled.matches] == sorted({m.object_id for m in tiled.matches},
                                                          key=lambda o: -next(m.score for m in tiled.matches
                                                                              if m.object_id == o))
    # the lot threshold is calibrated on tiles of unregistered photos; the whole-photo threshold stays
    before = reg.threshold
    done = reg.calibrate([photos["unknown"]], target_fmr=0.0, lots=True)
    assert reg.lot_threshold == done["threshold"] and reg.threshold == before
    reg.close()
    assert main(["-q", "register", "search", str(reg_dir), str(path), "--lots", "--threshold", "-1"]) == 0
    fields = capsys.readouterr().out.strip().split("\t")
    assert fields[1] == "match A" and fields[2].startswith("[A ") and "in tile 0.5 0.5 1 1" in fields[2].split(",")[0]
    assert main(["-q", "register", "search", str(reg_dir), str(path), "--lots", "--json", "--threshold", "-1"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["matches"][0]["object_id"] == "A" and res["matches"][0]["box"] == [0.5, 0.5, 1.0, 1.0]


def test_lot_threshold_from_composed_photos_of_single_unregistered_objects(tmp_path, photos, capsys):
    from artsentry.index.register import compose_calibration_lots

    reg_dir = tmp_path / "reg"
    reg = Register.create(reg_dir)
    reg.add("A", photos["A"][0])
    singles = [photos["unknown"], *photos["B"][0], *photos["C"][0]]
    lots, errors = compose_calibration_lots(singles + [str(tmp_path / "missing.jpg")], 3)
    again, _ = compose_calibration_lots(singles, 3)
    assert len(lots) == 3 and lots == again and "missing.jpg: file not found" in errors[0]
    assert Image.open(io.BytesIO(lots[0])).size == (900, 900)
    with pytest.raises(RegisterError, match="add --lots"):
        reg.calibrate(singles, compose=3)
    before = reg.threshold
    done = reg.calibrate(singles, target_fmr=0.0, lots=True, compose=3)
    assert done["photos"] == 3 and reg.lot_threshold == done["threshold"] and reg.threshold == before
    reg.close()
    assert main(["-q", "register", "calibrate", str(reg_dir), *singles, "--lots", "--compose", "4"]) == 0
    assert "lot no-match threshold set to" in capsys.readouterr().out


def test_one_photo_is_accepted_where_a_list_is_expected(tmp_path, photos, model_dir):
    """A path, a Path or a photo's bytes given alone is that one photo: before, a lone path's
    characters were read as twenty missing files ("none of its 20 photo(s) could be read")."""
    from pathlib import Path

    from artsentry.inference import Predictor

    reg = Register.create(tmp_path / "reg")
    assert reg.add("A", photos["A"][0][0]) == (1, [], 0)
    assert reg.add("B", Path(photos["B"][0][0])) == (1, [], 0)
    with open(photos["C"][0][0], "rb") as f:
        assert reg.add("C", f.read()) == (1, [], 0)
    [result] = reg.search(photos["A"][1], k=1)
    assert result.matches[0].object_id == "A"
    reg.close()

    predictor = Predictor.load(model_dir)
    [one] = predictor.predict_files(photos["A"][1])
    assert one.ok and one.source == photos["A"][1]
    [named] = predictor.predict_files(Path(photos["A"][1]), names="query")
    assert named.source == "query" and named.probabilities == one.probabilities
    with pytest.raises(ValueError, match="1 name"):
        predictor.predict_files(photos["A"][0], names=["only one"])


def test_a_change_waits_for_another_processs_and_gives_up_in_one_line_nothing_changed(tmp_path, photos, caplog):
    """Another process holds the register's write lock (an import's chunk, a rebuild, the ~51 s switch to an
    IVF index). A change here once died after SQLite's 5 s on a bare "database is locked" traceback; now it
    waits up to ``busy_seconds``, saying so once, and then refuses with ``RegisterBusy``, nothing changed.
    Searches do not wait: the other process's lock lets readers in."""
    import threading
    import time

    from artsentry.index.register import RegisterBusy

    folder = tmp_path / "reg"
    abc_register(folder, photos).close()

    def hold(release: threading.Event | float) -> threading.Thread:
        db = sqlite3.connect(folder / "register.sqlite", isolation_level=None, check_same_thread=False)
        db.execute("BEGIN IMMEDIATE")  # the other process's change, under way

        def end():
            release.wait() if isinstance(release, threading.Event) else time.sleep(release)
            db.execute("COMMIT")
            db.close()

        t = threading.Thread(target=end)
        t.start()
        return t

    reg = Register.open(folder, busy_seconds=0.6)
    reg.embedder.embed_files([photos["A"][1]])  # the model loaded before the clock starts
    history = reg.history()
    done = threading.Event()
    other = hold(done)
    try:
        assert reg.search(photos["A"][1], k=1)[0].matches[0].object_id == "A"
        for change in (lambda: reg.add("D", photos["unknown"]), lambda: reg.remove("A"),
                       lambda: reg.set_threshold(0.3), reg.rebuild):
            t0 = time.monotonic()
            with pytest.raises(RegisterBusy) as busy:
                change()
            assert 0.5 < time.monotonic() - t0 < 3
            assert str(busy.value) == (f"{folder}: another process is changing this register (an import, a "
                                       "rebuild, the web server) and still was after 0.6 s; nothing was changed: "
                                       "try again when it has finished")
    finally:
        done.set()
        other.join()
    assert reg.history() == history and reg.get("D") is None and reg.get("A") is not None and reg.threshold is None
    assert isinstance(busy.value, RegisterError)  # the CLI's one-line error, the server's 503
    reg.close()

    reg = Register.open(folder, busy_seconds=30)
    other = hold(2.5)
    caplog.clear()
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="artsentry.index.register"):
        assert reg.add("D", photos["unknown"])[0] == 1  # waits for the other change, then makes its own
    waited = time.monotonic() - t0
    other.join()
    assert 2.3 < waited < 10, waited
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"{folder}: another process is changing this register; waiting up to 30 s for it to finish"]
    assert reg.history()[-1]["action"] == "add"
    assert reg.search(photos["unknown"], k=1)[0].matches[0].object_id == "D"


def test_commands_on_the_records_alone_start_without_pytorch(tmp_path, photos):
    """`register list`, `get`, `history`, `set-threshold`, `remove` and `rebuild` read or change the database and
    the index, never a photo: they took 8.8 s to list three objects (PyTorch's import) before 2026-12-07."""
    folder = tmp_path / "reg"
    abc_register(folder, photos).close()
    argvs = [["list"], ["get", "A"], ["history", "B"], ["set-threshold", "0.5"], ["remove", "C"], ["rebuild"]]
    proc = in_fresh_process([["-q", "register", argv[0], str(folder), *argv[1:]] for argv in argvs])
    said = proc.stdout.splitlines()
    assert [line for line in said if line.startswith("exit ")] == ["exit 0"] * len(argvs), proc.stderr
    assert said[0].startswith("A\t2 photo(s)") and said[-1] == "False", proc.stdout
    assert "C: removed with its 2 photo(s)" in said and "index rebuilt from 4 photo vector(s)" in said
    reg = Register.open(folder)
    assert [o["object_id"] for o in reg.list()] == ["A", "B"] and reg.threshold == 0.5
    assert reg.search(photos["B"][1], k=1)[0].matches[0].object_id == "B"  # the embedder, once a photo is read


def test_changes_made_by_another_process_are_seen_and_kept(tmp_path, photos):
    """A register open in one process (the web server) while another changes it (`register add` or
    `remove` in a terminal). Before: the first never found objects added by the second, a search near
    an object the second removed raised KeyError, and the first's next change saved its stale index
    over the second's (the removed object back in the index, the added one gone from it)."""
    import subprocess
    import sys

    folder = tmp_path / "reg"
    abc_register(folder, photos).close()
    server = Register.open(folder)
    assert server.search(photos["A"][1], k=1)[0].matches[0].object_id == "A"

    def cli(*argv):
        proc = subprocess.run([sys.executable, "-m", "artsentry", "-q", "register", *argv], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr

    cli("add", str(folder), "D", photos["unknown"])
    cli("remove", str(folder), "A")
    rebuilt, from_db = [], server._index_from_db
    server._index_from_db = lambda: rebuilt.append(1) or from_db()
    assert server.indexed_vectors == 5  # B, C: two photos each; D: one
    assert not rebuilt  # the file the other process committed is read, not rebuilt (a minute at 200,000)
    [found] = server.search(photos["unknown"], k=2)
    assert found.matches[0].object_id == "D"
    [near_a] = server.search(photos["A"][1], k=3)  # A's own photo: A is gone, no KeyError
    assert "A" not in [m.object_id for m in near_a.matches]

    # a file written by a change not yet committed (here: the index as it was before D and A's removal)
    # is not the snapshot's: the index comes from the database's vectors
    stale = folder / "index.faiss"
    committed = stale.read_bytes()
    cli("add", str(folder), "F", photos["A"][1])
    newer = stale.read_bytes()
    stale.write_bytes(committed)
    assert server.indexed_vectors == 6 and rebuilt == [1]
    assert server.search(photos["A"][1], k=1)[0].matches[0].object_id == "F"
    stale.write_bytes(newer)
    cli("remove", str(folder), "F")
    assert server.indexed_vectors == 5 and rebuilt == [1]

    server.add("E", photos["A"][0][0])  # a change here keeps theirs
    server.close()
    again = Register.open(folder)
    assert sorted(o["object_id"] for o in again.list()) == ["B", "C", "D", "E"]
    assert len(again.index) == 6
    assert again.search(photos["unknown"], k=1)[0].matches[0].object_id == "D"


def test_what_a_register_command_refuses_it_says_in_one_line_and_changes_nothing(tmp_path, photos, capsys):
    """The refusals a user meets first, as the commands say them (no test reached them): a register created
    twice, a folder that holds none, an import from nowhere or from a table whose rows name no photo, a
    calibration on photos none of which could be read. Each is exit 1 and one line (after an unreadable photo's
    own); nothing is changed."""
    from artsentry.cli import main

    reg = str(tmp_path / "reg")
    assert main(["-q", "register", "create", reg]) == 0
    assert main(["-q", "register", "add", reg, "A", *photos["A"][0]]) == 0
    capsys.readouterr()
    before = (tmp_path / "reg" / "register.sqlite").read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "text.jpg").write_text("not a photo")
    (tmp_path / "ids.csv").write_text("object_id,image\nB,\n")
    for argv, said in [
        (["register", "create", reg], f"{reg}: a register already exists"),
        (["register", "info", str(tmp_path / "empty")], f"{tmp_path / 'empty'}: no register here (register.sqlite "
                                                         "missing); create one with"),
        (["register", "import", reg, str(tmp_path / "nowhere.csv")], f"{tmp_path / 'nowhere.csv'}: no such file or "
                                                                     "folder"),
        (["register", "import", reg, str(tmp_path / "ids.csv")], f"{tmp_path / 'ids.csv'}: no row names both an "
                                                                 "object id and a photo"),
        (["register", "calibrate", reg, str(tmp_path / "text.jpg")], "none of the calibration photos could be read"),
    ]:
        assert main(["-q", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert said in err and err.count("\n") <= 2, (argv, err)  # the unreadable photo's own line, then the refusal
        assert err.splitlines()[-1].startswith("artsentry register: error: ")
    assert (tmp_path / "reg" / "register.sqlite").read_bytes() == before


def test_a_read_only_register_is_searched_and_its_changes_refused_as_such(tmp_path, photos, monkeypatch, capsys):
    """A register on a read-only share: searches work; a change was SQLite's bare 'attempt to write a readonly
    database', and `register remove` called every id of it 'not in the register'."""
    import os

    from artsentry.index import NotRegistered, RegisterReadOnly

    abc_register(tmp_path / "reg", photos).close()
    reg = str(tmp_path / "reg")
    with pytest.raises(NotRegistered):  # the one refusal `register remove` counts as a missing id
        Register.open(reg).remove("Z")
    real_access = os.access
    monkeypatch.setattr("artsentry.index.register.os.access",  # the folder as a read-only mount shows it
                        lambda path, mode: False if mode == os.W_OK and str(path).startswith(reg) else
                        real_access(path, mode))
    opened = Register.open(reg)
    assert not opened.writable
    assert opened.search([photos["B"][1]])[0].matches[0].object_id == "B"
    for change in (lambda: opened.remove("A"), lambda: opened.add("D", [photos["unknown"]]),
                   lambda: opened.set_threshold(0.3)):
        with pytest.raises(RegisterReadOnly, match="read-only here"):
            change()
    capsys.readouterr()
    assert main(["-q", "register", "remove", reg, "A"]) == 1
    err = capsys.readouterr().err
    assert "the register is read-only here" in err and "not in the register" not in err
    assert main(["-q", "register", "search", reg, photos["B"][1]]) == 0
    capsys.readouterr()
    assert main(["-q", "register", "info", reg]) == 0 and opened.info()["writable"] is False
    said = capsys.readouterr().out.splitlines()[-1]
    assert said == "writable\tno: the register is read-only here (searched, not changed)"
    monkeypatch.undo()
    assert Register.open(reg).info()["writable"] is True
    assert Register.open(reg).get("A") is not None  # nothing was changed


def test_an_import_table_of_paths_from_the_working_folder_is_said_to_be_so(tmp_path, photos, monkeypatch):
    from artsentry.index.register import read_objects

    (tmp_path / "tables").mkdir()
    photo = Path(photos["A"][0][0])
    monkeypatch.chdir(photo.parent)  # where the table's author stood: its paths are from there
    table = tmp_path / "tables" / "catalogue.csv"
    table.write_text(f"object_id,photo\nA,{photo.name}\nB,{photo.name}\n")
    with pytest.raises(RegisterError, match=rf"2 image path\(s\) are not beside the table .*\(e.g. {photo.name}\).*"
                                            "nothing was imported"):
        read_objects(table)
    (tmp_path / "tables" / "b.jpg").write_bytes(photo.read_bytes())
    table.write_text(f"object_id,photo\nA,{photo.name}\nB,b.jpg\n")  # some right: said, the rest imported
    objects, problems = read_objects(table)
    assert [o for o, _, _ in objects] == ["A", "B"]
    assert len(problems) == 1 and "1 image path(s) are not beside the table" in problems[0]
    table.write_text("object_id,photo\nA,C:\\catalogue\\a.jpg\nB,\\\\nas\\photos\\b.jpg\n")  # made on a PC
    with pytest.raises(RegisterError, match=r"2 image path\(s\) are Windows paths .*nothing was imported"):
        read_objects(table)


def test_a_catalogue_with_several_photo_columns_registers_every_photo_of_a_row(tmp_path, photos):
    """A catalogue naming an object's photos in image1, image2...: it was refused ("no photo column"), and
    one with image and image2 registered the image alone, without a word."""
    from artsentry.index.register import read_objects

    (a1, a2), (b1, _) = photos["A"][0][:2], photos["B"][0][:2]
    table = tmp_path / "catalogue.csv"
    table.write_text(f"object_id,title,image1,image2\nA,comb,{a1},{a2}\nB,box,{b1},\nC,none,,\n")
    objects, problems = read_objects(table)
    assert [(o, p, m.get("title")) for o, p, m in objects] == [("A", [a1, a2], "comb"), ("B", [b1], "box")]
    assert problems == [f"{table} line 4: no photo: skipped"]
    table.write_text(f"object_id,photo,photo_2\nA,{a1},{a2}\n")
    assert read_objects(table)[0] == [("A", [a1, a2], {})]
    listed = tmp_path / "catalogue.jsonl"  # a JSON list of photos; another list kept as its JSON text
    listed.write_text(json.dumps({"object_id": "A", "images": [a1, a2], "materials": ["ivory", "gilt"]}) + "\n")
    assert read_objects(listed)[0] == [("A", [a1, a2], {"materials": '["ivory", "gilt"]'})]


def test_ids_that_differ_only_in_how_accents_are_encoded_are_one_id(tmp_path, photos, caplog):
    """'Musée-1' typed (composed, NFC) and the same id from a folder name on a Mac (decomposed, NFD) were two
    objects: the one registered from the folder could not be fetched or removed by the id as typed."""
    import unicodedata

    typed, from_mac = "Musée-1", unicodedata.normalize("NFD", "Musée-1")
    assert typed != from_mac
    reg = abc_register(tmp_path / "reg", photos)
    reg.add(from_mac, [photos["unknown"]], title="from a Mac folder")
    assert reg.get(typed)["title"] == "from a Mac folder" and reg.get(typed)["object_id"] == typed
    reg.add(typed, [photos["A"][1]])  # the same object, not a second one
    assert len(reg) == 4 and len(reg.get(from_mac)["photos"]) == 2
    # a register written before ids were composed: its decomposed ids are composed when it is opened
    for table in ("objects", "photos", "history"):
        reg.db.execute(f"UPDATE {table} SET object_id = ? WHERE object_id = ?", (from_mac, typed))
    reg.close()
    again = Register.open(tmp_path / "reg")
    assert again.get(typed)["title"] == "from a Mac folder"
    assert {o for (o,) in again.db.execute("SELECT object_id FROM photos UNION SELECT object_id FROM history "
                                           "WHERE object_id IS NOT NULL")} == {"A", "B", "C", typed}
    assert [h["action"] for h in again.history(typed)] == ["add", "add_photos"]
    assert again.search([photos["unknown"]])[0].matches[0].object_id == typed
    # both spellings held as two objects: left, said, and the composed one still found by its id
    again.db.execute("INSERT INTO objects (object_id, title) VALUES (?, 'the other spelling')", (from_mac,))
    again.close()
    with caplog.at_level("WARNING", logger="artsentry.index.register"):
        third = Register.open(tmp_path / "reg")
    assert "differ only in how their accents are encoded" in caplog.text
    assert third.get(typed)["title"] == "from a Mac folder" and len(third) == 5
