import json
import os

import pandas as pd
import pytest

from artsentry.collect.crawl import CrawlStore
from artsentry.collect.metobjects import MetObjectsError, import_metobjects, read_metobjects
from artsentry.data.recipes import culture_group, ivory_label, recipe_filter
from artsentry.data.splits import split_instances

from .conftest import metobjects_csv


@pytest.mark.parametrize("medium, label", [
    ("Ivory", "ivory"),
    ("Ivory, gold", "ivory"),
    ("Elephant ivory", "ivory"),
    ("Walrus ivory", "ivory"),
    ("Ivory with traces of paint", "ivory"),
    ("Ivory; silver mounts", "ivory"),
    ("Watercolor on ivory", None),       # painting support: the photo shows paint
    ("Watercolor on ivory, gold frame", None),
    ("Bone, ivory", None),               # ivory is secondary
    ("Wood, ivory inlay", None),
    ("Porcelain", "non_ivory"),
    ("Hard-paste porcelain", "non_ivory"),
    ("Earthenware, tin-glazed (maiolica)", "non_ivory"),
    ("Stoneware", "non_ivory"),
    ("Terracotta", "non_ivory"),
    ("Ivory-glazed porcelain", "non_ivory"),  # a colour, not the material
    ("Vegetable ivory", None),  # tagua palm nut: named after ivory, not ivory
    ("Vegetable ivory, paint", None),
    ("French ivory", None),  # celluloid
    ("Celluloid (imitation ivory)", None),
    ("Imitation ivory; brass", None),
    ("Ivorine", None),
    ("Plastic (faux ivory)", None),
    ("Ivory, celluloid", "ivory"),  # ivory is the main material; the plastic a part
    ("Bone or ivory", None),  # the cataloguer was not sure
    ("Ivory or bone", None),
    ("Ivory (walrus or elephant)", "ivory"),  # sure it is ivory, not of which animal
    ("Walrus ivory or elephant ivory", "ivory"),
    ("Hippopotamus ivory, gilding", "ivory"),
    ("Bone china", "non_ivory"),
    ("Oil on canvas", None),
    ("Bronze", None),
    ("", None),
    (None, None),
])
def test_ivory_rule_on_real_medium_strings(medium, label):
    assert ivory_label(medium) == label


@pytest.mark.parametrize("culture, group", [
    ("India (Gujarat)", "Indian"), ("North India", "Indian"), ("India", "Indian"),
    ("China", "Chinese"), ("Japan", "Japanese"), ("American", "American"), ("", None), ("Aztec", "Aztec"),
    ("American Indian", "American"), ("Native American", "American"),  # not South Asian: they hold "India"
    ("West Indian", "Caribbean"), ("British, West Indies", "Caribbean"),
])
def test_culture_groups(culture, group):
    assert culture_group(culture) == group


def test_instance_split_keeps_every_object_in_train():
    df = pd.DataFrame({"label": ["a"] * 5 + ["b"] * 3 + ["c"] * 2, "path": range(10)})
    split = split_instances(df, seed=0, val_fraction=0.2, test_fraction=0.2)
    for label, g in split.groupby(df["label"]):
        assert (g == "train").any()
    assert (split[df["label"] == "a"] == "test").sum() == 1 and (split[df["label"] == "a"] == "val").sum() == 1
    # three photos are enough for one of each; two for train and val; one stays in train
    assert sorted(split[df["label"] == "b"]) == ["test", "train", "val"]
    assert sorted(split[df["label"] == "c"]) == ["train", "val"]
    one = pd.DataFrame({"label": ["a"] * 10 + ["d"], "path": range(11)})
    split = split_instances(one, seed=0, val_fraction=0.2, test_fraction=0.2)
    assert split.iloc[-1] == "train"
    assert split[:10].value_counts().to_dict() == {"train": 6, "test": 2, "val": 2}


@pytest.mark.parametrize("val, test", [(0.4, 0.4), (0.3, 0.6), (0.05, 0.9), (0.9, 0.05)])
def test_instance_split_leaves_a_training_photo_at_any_fractions(val, test):
    # large fractions used to deal a 4- or 5-photo object's every photo to test and val
    df = pd.DataFrame({"label": [c for c, n in zip("abcdefg", (1, 2, 3, 4, 5, 8, 20)) for _ in range(n)]})
    df["path"] = range(len(df))
    split = split_instances(df, seed=0, val_fraction=val, test_fraction=test)
    for label, g in split.groupby(df["label"]):
        assert (g == "train").any(), label
        if len(g) >= 3:
            assert (g == "test").any() and (g == "val").any(), label


def test_instance_split_with_a_zero_fraction_gives_that_split_nothing():
    df = pd.DataFrame({"label": ["a"] * 6 + ["b"] * 3, "path": range(9)})
    assert set(split_instances(df, seed=0, val_fraction=0.0, test_fraction=0.2)) == {"train", "test"}
    assert set(split_instances(df, seed=0, val_fraction=0.2, test_fraction=0.0)) == {"train", "val"}


def test_metobjects_import_with_recipe_filter(tmp_path):
    metobjects_csv(tmp_path / "MetObjects.csv", [
        {"Object ID": "10", "Is Public Domain": "True", "Medium": "Ivory", "Object Begin Date": "1700"},
        {"Object ID": "11", "Is Public Domain": "True", "Medium": "Porcelain"},
        {"Object ID": "12", "Is Public Domain": "False", "Medium": "Ivory"},
        {"Object ID": "13", "Is Public Domain": "True", "Medium": "Oil on canvas", "Classification": "Paintings",
         "Culture": "Japan"},
    ])
    recs = list(read_metobjects(tmp_path / "MetObjects.csv"))
    assert recs[0]["objectID"] == 10 and recs[0]["isPublicDomain"] is True and recs[0]["objectBeginDate"] == 1700
    store = CrawlStore(tmp_path / "col")
    assert import_metobjects(tmp_path / "MetObjects.csv", store, keep=recipe_filter("ivory")) == [10, 11]
    assert import_metobjects(tmp_path / "MetObjects.csv", store, keep=recipe_filter("culture")) == [13]
    assert import_metobjects(tmp_path / "MetObjects.csv", store, keep=recipe_filter("ivory")) == [10, 11]
    assert store.counts()["objects"] == {"imported": 3}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MetObjectsError, match="not a MetObjects.csv"):
        list(read_metobjects(tmp_path / "bad.csv"))



def test_metobjects_rows_read_as_the_api_names_them_and_a_bad_id_is_named_by_its_line(tmp_path):
    """Booleans from "True"/"false", empty or unreadable dates as None, the public-domain rule optional;
    a row without a numeric Object ID stops the import naming its file line, counted past a quoted field
    that spans lines (the museum's Dimensions and Title fields do)."""
    metobjects_csv(tmp_path / "MetObjects.csv", [
        {"Object ID": "7", "Is Public Domain": "false", "Is Highlight": "TRUE", "Medium": "Ivory",
         "Object Begin Date": "", "Object End Date": "ca. 1800", "Title": "Comb\nwith two rows of teeth"},
        {"Object ID": " 8 ", "Is Public Domain": "True", "Medium": "Ivory", "Object Begin Date": "-300"},
    ])
    first, second = read_metobjects(tmp_path / "MetObjects.csv")
    assert (first["objectID"], first["isPublicDomain"], first["isHighlight"]) == (7, False, True)
    assert (first["objectBeginDate"], first["objectEndDate"]) == (None, None)
    assert first["title"] == "Comb\nwith two rows of teeth"
    assert (second["objectID"], second["isPublicDomain"], second["objectBeginDate"]) == (8, True, -300)
    store = CrawlStore(tmp_path / "col")
    assert import_metobjects(tmp_path / "MetObjects.csv", store) == [8]
    assert import_metobjects(tmp_path / "MetObjects.csv", store, public_domain_only=False) == [7, 8]
    for bad, said in (("", "no Object ID"), ("12a", "Object ID '12a' is not a number"),
                      ("-4", "Object ID '-4' is not a number")):
        metobjects_csv(tmp_path / "bad.csv", [{"Object ID": "1", "Title": "two\nlines"}, {"Object ID": bad}])
        with pytest.raises(MetObjectsError) as refused:
            list(read_metobjects(tmp_path / "bad.csv"))
        assert str(refused.value) == f"{tmp_path / 'bad.csv'}:4: {said}"  # header 1, the first row 2-3


def test_a_metobjects_file_not_utf8_or_not_csv_is_an_error_naming_it_not_a_traceback(tmp_path):
    """A file re-saved in Latin-1 was refused with the codec's message only ('can't decode byte 0xe9 in
    position 56'), naming no file; a field over the csv module's limit ended in a _csv.Error traceback."""
    latin = tmp_path / "latin1.csv"
    latin.write_bytes("Object ID,Is Public Domain,Medium,Title\n1,True,Ivory,Café\n".encode("latin-1"))
    with pytest.raises(MetObjectsError) as refused:
        list(read_metobjects(latin))
    assert str(refused.value) == f"{latin}: not UTF-8 text, as the museum's file is (re-save it as UTF-8)"
    metobjects_csv(tmp_path / "big.csv", [{"Object ID": "1", "Title": "two\nlines"},
                                          {"Object ID": "2", "Title": "x" * 200_000}])
    with pytest.raises(MetObjectsError) as refused:
        list(read_metobjects(tmp_path / "big.csv"))
    assert str(refused.value) == (f"{tmp_path / 'big.csv'}:4: not readable as CSV (field larger than field "
                                  "limit (131072))")  # header 1, the first row 2-3


def test_a_quote_never_closed_is_an_error_not_the_rest_of_the_file_read_as_one_field(tmp_path):
    """The csv module takes everything after a quote left open as that one field: the import stored the row
    with the rest of the file as its title and said nothing of the rows swallowed. Now it names the row's line
    and stores nothing; a last row without a line end, or a closed quote spanning lines, still reads."""
    header = "Object ID,Is Public Domain,Medium,Title\n"
    for tail in ("Ivory,\"Comb\n3,True,Ivory,Box\n4,True,Ivory,Fan\n", "\"Ivory,Comb\n3,True,Ivory,Box\n",
                 "Ivory,Comb,\"extra\n3,True,Ivory,Box", "\"Ivory\",\"Comb\n3,True,Ivory,Box\n"):
        (tmp_path / "open.csv").write_text(header + "1,True,Ivory,Cup\n2,True," + tail)
        store = CrawlStore(tmp_path / "col")
        with pytest.raises(MetObjectsError) as refused:
            import_metobjects(tmp_path / "open.csv", store)
        assert str(refused.value) == (f"{tmp_path / 'open.csv'}:3: a quote opened in the row starting here is never "
                                      "closed, so the rest of the file would read as one field")
        assert store.counts()["objects"] == {}  # row 1 was read, then rolled back with the rest
        store.close()
    (tmp_path / "fine.csv").write_text(header + '1,True,Ivory,"Comb,\nwith teeth"\n2,True,Ivory,"Box"')
    assert [(r["objectID"], r["title"]) for r in read_metobjects(tmp_path / "fine.csv")] == [
        (1, "Comb,\nwith teeth"), (2, "Box")]


def _collection(folder, rows):
    """A crawl's collection.csv (paths relative to it) with a small photo per row."""
    from .conftest import object_photo

    (folder / "images").mkdir(parents=True)
    for i, r in enumerate(rows):
        r.setdefault("path", f"images/{i:02d}.jpg")
        object_photo((200, 180, 150), size=(48, 36), seed=i).save(folder / r["path"])
    pd.DataFrame(rows).to_csv(folder / "collection.csv", index=False)
    return folder


def test_build_writes_each_recipes_manifest_relative_to_itself(tmp_path, capsys):
    from artsentry.data.manifest import read_manifest
    from artsentry.data.recipes import build

    col = _collection(tmp_path / "col", [
        {"object_id": "9", "medium": "Porcelain", "classification": "Ceramics", "culture": "China"},
        {"object_id": "3", "medium": "Ivory, gold", "classification": "Ivories", "culture": "France"},
        {"object_id": "3", "medium": "Ivory, gold", "classification": "Ivories", "culture": "France"},
        {"object_id": "5", "medium": "Vegetable ivory", "classification": "Buttons", "culture": "American"},
        {"object_id": "7", "medium": "Stoneware", "classification": "Ceramics", "culture": "Japan"},
        {"object_id": "8", "medium": "Oil on canvas", "classification": "Paintings", "culture": "Japan"},
        {"object_id": "1", "medium": "Ink on silk", "classification": "Paintings", "culture": "China"},
        {"object_id": "2", "medium": "Ink on paper", "classification": "Paintings", "culture": "Chinese"},
        {"object_id": "4", "medium": "Watercolor on ivory", "classification": "Miniatures", "objectName": "Painting",
         "culture": "India (Bengal)"},
    ])
    out = tmp_path / "ds" / "ivory"
    df = build("ivory", col, out)  # the folder or its collection.csv alike
    assert list(df.columns[:3]) == ["path", "label", "object_id"]
    assert list(zip(df["label"], df["object_id"])) == [("ivory", "3"), ("ivory", "3"), ("non_ivory", "7"),
                                                       ("non_ivory", "9")]  # sorted; vegetable ivory left out
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(manifest.columns[:3]) == ["path", "label", "object_id"] and "Unnamed: 0" not in manifest
    assert manifest["path"].str.startswith("../../col/images/").all()  # relative: the folders can move together
    table, _ = read_manifest(out / "manifest.csv")
    assert [os.path.realpath(p) for p in table["path"]] == list(df["path"])  # the photos the recipe chose
    assert all(os.path.isfile(p) for p in df["path"])
    assert (out / "card.json").is_file() and (out / "card.html").is_file()
    # the command (no test ran it): the same manifest, and what it made said in two lines
    from artsentry.cli import main

    assert main(["-q", "build", "ivory", str(col), "--out", str(tmp_path / "ds" / "cli")]) == 0
    assert capsys.readouterr().out == ("4 images of 3 objects, 2 classes: ivory 2, non_ivory 2\n"
                                       f"manifest: {tmp_path / 'ds' / 'cli' / 'manifest.csv'}; card: "
                                       f"{tmp_path / 'ds' / 'cli' / 'card.html'}\n")
    assert (tmp_path / "ds" / "cli" / "manifest.csv").read_text() == (out / "manifest.csv").read_text()
    with pytest.raises(SystemExit) as stop:
        main(["-q", "build", "bronze", str(col), "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "invalid choice: 'bronze'" in capsys.readouterr().err
    # an instance recipe's many classes: the first twenty counted, the rest said to be in the card
    many = _collection(tmp_path / "many", [{"object_id": f"{i // 2:02d}", "medium": "Ivory"} for i in range(44)])
    assert main(["-q", "build", "instance", str(many), "--out", str(tmp_path / "inst"), "--min-images", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("44 images of 22 objects, 22 classes: 00 2, 01 2, ")
    assert first.endswith(", 19 2, ... and 2 more (card.html counts each)"), first
    assert main(["-q", "build", "ivory", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 1
    assert "nowhere: no collection.csv (run `artsentry collect` first)" in capsys.readouterr().err
    # built again into its folder it is replaced; a manifest.csv no build wrote (a run's split) is not
    assert main(["-q", "build", "ivory", str(col), "--out", str(tmp_path / "ds" / "cli")]) == 0
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.csv").write_text("path,label,object_id,split\na.jpg,ivory,1,train\n")
    assert main(["-q", "build", "ivory", str(col), "--out", str(run)]) == 1
    assert "holds a manifest.csv that no 'artsentry build' wrote" in capsys.readouterr().err
    assert (run / "manifest.csv").read_text() == "path,label,object_id,split\na.jpg,ivory,1,train\n"
    assert sorted(p.name for p in run.iterdir()) == ["manifest.csv"]
    # the card says how the dataset was made; another recipe into its folder is refused, not a silent swap
    made = json.loads((tmp_path / "ds" / "cli" / "card.json").read_text())
    assert list(made)[:2] == ["recipe", "collection"] and made["recipe"] == "ivory"
    assert made["collection"] == str((col / "collection.csv").resolve())
    before = (tmp_path / "ds" / "cli" / "manifest.csv").read_text()
    assert main(["-q", "build", "culture", str(col), "--out", str(tmp_path / "ds" / "cli")]) == 1
    assert f"holds the ivory dataset built from {made['collection']}, which this culture build would replace" \
        in capsys.readouterr().err
    assert (tmp_path / "ds" / "cli" / "manifest.csv").read_text() == before

    # paintings (by classification or object name) by culture group: Chinese 2, then Indian and
    # Japanese 1 each; the top two, ties by name
    culture = build("culture", col / "collection.csv", tmp_path / "ds" / "culture", top=2)
    assert list(zip(culture["label"], culture["object_id"])) == [("Chinese", "1"), ("Chinese", "2"), ("Indian", "4")]
    with pytest.raises(ValueError, match=r"recipe 'culture' found only one class \(Chinese\) in "):
        build("culture", col, tmp_path / "ds" / "one", top=1)

    objects = _collection(tmp_path / "col2", [{"object_id": o} for o in "AAAABBBC"])
    inst = build("instance", objects, tmp_path / "ds" / "instance", min_images=3)
    assert list(inst.columns[:4]) == ["path", "label", "object_id", "split"]
    assert list(inst["label"]) == list("AAAABBB")  # C has one photo: not an object to recognise again
    assert all("train" in set(g) for _, g in inst.groupby("label")["split"])

    with pytest.raises(ValueError, match="unknown recipe 'bronze'; choose from ivory, culture, instance"):
        build("bronze", col, tmp_path / "x")
    with pytest.raises(FileNotFoundError, match=r"nowhere: no collection\.csv \(run `artsentry collect` first\)"):
        build("ivory", tmp_path / "nowhere", tmp_path / "x")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nowhere/collection\.csv: no collection\.csv"):
        build("ivory", tmp_path / "nowhere", tmp_path / "x")
    with pytest.raises(ValueError, match=r"col2/collection\.csv: the culture recipe needs the column\(s\) culture, "
                                         r"classification; the table has object_id, path$"):
        build("culture", objects, tmp_path / "x")  # a table of photos by object: no crash on a missing column
    with pytest.raises(ValueError, match=r"the ivory recipe needs the column\(s\) medium; "):
        build("ivory", objects, tmp_path / "x")
    bronze = _collection(tmp_path / "col3", [{"object_id": "1", "medium": "Bronze", "classification": "Metalwork",
                                              "culture": "China"}])
    # why, and no empty --out left behind (it was made before the recipe had chosen anything)
    with pytest.raises(ValueError, match=r"recipe 'culture' selected no images from .*col3/collection\.csv \(1 read\): "
                                         "no image is of a painting whose culture the recipe groups$"):
        build("culture", bronze, tmp_path / "x")
    with pytest.raises(ValueError, match=r"\(1 read\): no image's medium names ivory as its main material, or a "):
        build("ivory", bronze, tmp_path / "x")
    with pytest.raises(ValueError, match=r"\(1 read\): no object has 2 or more photos \(the most: 1\); lower "
                                         "--min-images$"):
        build("instance", bronze, tmp_path / "x", min_images=2)
    assert not (tmp_path / "x").exists()


def test_build_warns_of_classes_too_small_to_be_split_by_object(tmp_path, caplog):
    """A culture build of a small crawl gave classes of one object ('British 1, French 1') without a word: a
    split by object puts such a class in one split only, so it is learnt from one object or never tested."""
    from artsentry.data.recipes import build

    rows = [{"object_id": str(i), "medium": "Oil on silk", "classification": "Paintings", "culture": culture}
            for i, culture in enumerate(["China"] * 4 + ["Japan"] * 3 + ["France", "India", "India"])]
    build("culture", _collection(tmp_path / "col", rows), tmp_path / "culture")
    assert caplog.messages == ["2 class(es) hold fewer than 3 objects: French (1 object), Indian (2 objects); a split "
                               "by object cannot give each photos in train, validation and test, so they are learnt "
                               "from little and barely tested (--top N keeps the N largest)"]
    # kept with the dataset: card.json and card.html say it too, and the card's tables are tables
    card = json.loads((tmp_path / "culture" / "card.json").read_text())
    assert card["warnings"] == caplog.messages
    page = (tmp_path / "culture" / "card.html").read_text()
    assert f"<h2>Warnings</h2><ul><li>{caplog.messages[0]}</li></ul>" in page
    assert "<table><tr><th>images of the object</th><th>objects</th></tr><tr><td>1</td><td>10</td></tr></table>" in page
    caplog.clear()
    build("culture", tmp_path / "col", tmp_path / "two", top=2)  # the largest two: 4 and 3 objects
    assert caplog.messages == []
    build("instance", tmp_path / "col", tmp_path / "inst", min_images=1)  # split by photo: not said
    assert caplog.messages == []


def test_build_reads_a_collection_as_a_manifest_is_read_so_a_stray_comma_is_named_not_shifted(tmp_path):
    """A hand-made collection.csv whose first row holds an unquoted comma ('Ivory, gold'): pandas made the
    row's first field the index and moved every column one along, so each medium was read from the wrong
    column and the build said only 'selected no images'. It is read as manifests are: an error naming the line."""
    from artsentry.data.recipes import build

    col = _collection(tmp_path / "col", [{"object_id": str(i), "medium": m}
                                         for i, m in enumerate(["Ivory", "Porcelain", "Ivory", "Earthenware"])])
    text = (col / "collection.csv").read_text().splitlines()
    assert text[:2] == ["object_id,medium,path", "0,Ivory,images/00.jpg"]
    text[1] = "0,Ivory, gold,images/00.jpg"
    (col / "collection.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(ValueError) as refused:
        build("ivory", col, tmp_path / "ds")
    assert str(refused.value) == (f"{col / 'collection.csv'}: line 2 has 4 fields, the header 3: a value holding "
                                  "',' must be in double quotes")
    text[1] = text[1].replace("Ivory, gold", '"Ivory, gold"')
    (col / "collection.csv").write_text("\n".join(text) + "\n")
    assert list(build("ivory", col, tmp_path / "ds")["label"]) == ["ivory", "ivory", "non_ivory", "non_ivory"]


def test_photos_gone_from_a_collection_are_left_out_of_its_dataset_with_a_warning(tmp_path, caplog):
    """Photos deleted or moved since the crawl were listed in the manifest and counted ('12 images'); training
    then skipped them. The build now leaves them out, saying how many and which, before any recipe counts
    photos: an object left with too few photos is no longer an instance class."""
    import logging

    from artsentry.data.recipes import build

    col = _collection(tmp_path / "col", [{"object_id": o, "medium": m} for o, m in
                                         zip("AAABBBCCC", ["Ivory"] * 3 + ["Porcelain"] * 6)])
    for gone in ("images/01.jpg", "images/07.jpg", "images/08.jpg"):
        (col / gone).unlink()
    with caplog.at_level(logging.WARNING, logger="artsentry"):
        ivory = build("ivory", col, tmp_path / "ivory")
    assert len(ivory) == 6 and list(ivory["label"]).count("ivory") == 2
    assert [r.getMessage() for r in caplog.records][0] == (  # then: its classes are small (the next test)
        f"{col / 'collection.csv'}: 3 listed image(s) not found, left out: {col / 'images' / '01.jpg'}, "
        f"{col / 'images' / '07.jpg'}, {col / 'images' / '08.jpg'}")
    assert list(build("instance", col, tmp_path / "inst", min_images=2)["label"].unique()) == ["A", "B"]


def test_a_dataset_card_counts_images_objects_splits_and_centuries():
    """What a curator reads to check a built dataset before training on it (card.json)."""
    from artsentry.data.card import card_data, century

    df = pd.DataFrame({
        "path": [f"{i}.jpg" for i in range(7)],
        "label": ["ivory", "ivory", "ivory", "non_ivory", "non_ivory", "non_ivory", "non_ivory"],
        "object_id": ["a", "a", "b", "c", "c", "c", "d"],
        "split": ["train", "train", "test", "train", "train", "train", "test"],
        "department": ["Asian Art", "Asian Art", "", "Arms", "Arms", "Arms", None],
        "objectBeginDate": [1850, 1850, -200, 1900, 1900, 1900, "unknown"],
        "objectEndDate": [1899, 1899, -100, 2000, 2000, 2000, 1700],
    })
    card = card_data(df)
    assert (card["images"], card["objects"], card["classes"]) == (7, 4, 2)
    assert card["images_per_class"] == {"non_ivory": 4, "ivory": 3}
    assert card["objects_per_class"] == {"ivory": 2, "non_ivory": 2}  # one row per object
    assert card["images_per_object"] == {"1": 2, "2": 1, "3": 1}  # b and d alone, a twice, c three times
    assert card["split"] == {"test": {"ivory": 1, "non_ivory": 1}, "train": {"non_ivory": 3, "ivory": 2}}
    assert card["objects_per_department"] == {"(empty)": 2, "Arms": 1, "Asian Art": 1}
    assert card["objects_per_century"] == {"19th c.": 1, "BCE": 1, "20th c.": 1, "(empty)": 1}
    assert list(card["objects_per_century"]) == ["BCE", "19th c.", "20th c.", "(empty)"]  # time's order, not by count
    # the midpoint's century, with English ordinals
    years = {1: "1st c.", 150: "2nd c.", 250: "3rd c.", 1050: "11th c.", 1150: "12th c.", 1250: "13th c.",
             2050: "21st c.", 2150: "22nd c.", 1000: "11th c.", 1099: "11th c.", 1100: "12th c.", 0: "BCE", -50: "BCE"}
    for year, name in years.items():
        assert century({"objectBeginDate": year, "objectEndDate": year}) == name, year
    assert century({"objectBeginDate": 1801, "objectEndDate": 1900}) == "19th c."  # midpoint 1850
    assert century({"objectBeginDate": None, "objectEndDate": 1900}) is None
