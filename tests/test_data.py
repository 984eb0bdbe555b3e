import codecs
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from artsentry.data.manifest import ManifestError, read_manifest
from artsentry.data.splits import leakage_groups, split_manifest

from .conftest import object_photo, require_met_ivory


def test_labelled_folder(synthetic_dataset):
    df, report = read_manifest(synthetic_dataset)
    assert len(df) == 48
    assert set(df["label"]) == {"ivory", "non_ivory"}
    assert report.object_id_inferred
    assert df["object_id"].is_unique


def test_images_subfolder_layout(tmp_path, synthetic_dataset, caplog):
    shutil.copytree(synthetic_dataset, tmp_path / "images")
    df, _ = read_manifest(tmp_path)
    assert len(df) == 48
    # an image beside the label folders has no label: said, not silently left out; so is a raw file
    shutil.copy(next((tmp_path / "images" / "ivory").iterdir()), tmp_path / "images" / "stray.jpg")
    (tmp_path / "images" / "ivory" / "IMG_7.cr2").write_bytes(b"raw")
    (tmp_path / "images" / ".thumbnails").mkdir()  # a hidden folder is not a label
    shutil.copy(tmp_path / "images" / "stray.jpg", tmp_path / "images" / ".thumbnails" / "t.jpg")
    with caplog.at_level("WARNING"):
        df, _ = read_manifest(tmp_path)
        assert len(df) == 48 and set(df["label"]) == {"ivory", "non_ivory"}
    assert "1 image(s) outside any label folder not used, e.g. stray.jpg" in caplog.text
    assert "ivory: 1 file(s) not read, not images by their ending (1 .cr2)" in caplog.text


def test_a_run_folder_inside_the_data_is_not_read_as_a_label(tmp_path, synthetic_dataset, caplog):
    """`train photos --out photos/run1`: the run's projection.png made `run1` a third label of the next
    run on `photos` (found 2026-12-06). Every run folder holds its lock file."""
    from artsentry.files import LOCK_NAME

    shutil.copytree(synthetic_dataset, tmp_path / "photos")
    run = tmp_path / "photos" / "run1"
    (run / "projection").mkdir(parents=True)
    (run / LOCK_NAME).write_text("pid 1: artsentry train photos --out photos/run1")
    shutil.copy(next((tmp_path / "photos" / "ivory").iterdir()), run / "projection" / "projection.png")
    with caplog.at_level("WARNING"):
        df, _ = read_manifest(tmp_path / "photos")
    assert len(df) == 48 and set(df["label"]) == {"ivory", "non_ivory"}
    assert f"{run}: an artsentry output folder" in caplog.text


def test_met_ivory_metadata_csv_is_read_as_is():
    root = require_met_ivory()
    df, report = read_manifest(root / "metadata.csv")
    assert len(df) == 2829
    assert df["label"].value_counts().to_dict() == {"ivory": 1415, "non_ivory": 1414}
    assert not report.missing_files and not report.object_id_inferred
    assert df["path"].str.startswith(str(root.resolve())).all()  # paths are resolved: shared/ may be a link
    # the folder finds its metadata.csv too
    assert len(read_manifest(root)[0]) == 2829


def test_csv_with_missing_files_reports_them(tmp_path):
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    pd.DataFrame({"image": ["a.jpg", "gone.jpg"], "label": ["x", "y"], "objectID": ["1", "2"]}).to_csv(
        tmp_path / "m.csv", index=False)
    df, report = read_manifest(tmp_path / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "a.jpg")]
    assert report.missing_files == [str(tmp_path / "gone.jpg")]
    assert "1 listed image(s) not found" in report.lines()[0]


def test_urls_in_a_training_table_are_said_to_be_urls_not_missing_files(tmp_path):
    """A table of listing URLs handed to train or evaluate: its URLs were 'not found', as if a file had gone."""
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    pd.DataFrame({"image": ["a.jpg", "https://shop.example/1.jpg", "gone.jpg"], "label": ["x", "y", "y"]}).to_csv(
        tmp_path / "m.csv", index=False)
    df, report = read_manifest(tmp_path / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "a.jpg")]
    assert report.lines()[:2] == [
        f"1 listed image(s) not found and skipped: {tmp_path / 'gone.jpg'}",
        "1 listed image(s) are URLs, skipped: images are read from files; download them first: "
        "https://shop.example/1.jpg"]
    pd.DataFrame({"image": ["https://shop.example/1.jpg"], "label": ["y"]}).to_csv(tmp_path / "u.csv", index=False)
    with pytest.raises(ManifestError, match=r"none of the listed images exist \(1 are URLs: .*download them first"):
        read_manifest(tmp_path / "u.csv")


def test_missing_files_are_named_five_at_most_then_counted(tmp_path):
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    gone = [f"gone{i}.jpg" for i in range(7)]
    pd.DataFrame({"image": ["a.jpg", *gone], "label": ["x"] * 8}).to_csv(tmp_path / "m.csv", index=False)
    df, report = read_manifest(tmp_path / "m.csv")
    assert df.index.tolist() == [0] and sorted(df.columns) == ["label", "object_id", "path"]  # no "index" column
    line = report.lines()[0]
    assert line.startswith("7 listed image(s) not found and skipped: ") and line.endswith("gone4.jpg and 2 more")
    report.missing_files = report.missing_files[:5]
    assert report.lines()[0].endswith("gone4.jpg")


def test_rows_are_named_as_each_kind_of_table_counts_them():
    from pathlib import Path

    from artsentry.data.manifest import row_name

    assert [row_name(Path(f"t.{ext}"), 0) for ext in ("csv", "tsv", "xlsx", "parquet", "jsonl", "json")] == [
        "line 2", "line 2", "row 2", "row 1", "line 1", "record 1"]  # CSV and sheets have a header line; the others not


def test_columns_are_found_as_a_spreadsheet_author_types_their_names(tmp_path):
    """"Image Path", "Object ID", "Image URL 2": a person's names for the columns the readers look for (any
    case, spaces or hyphens for underscores) were refused ("no image column") or, numbered, not seen."""
    from artsentry.data.manifest import photo_columns
    from artsentry.index.register import PHOTO_COLUMNS

    for name in ("a.jpg", "b.jpg"):
        object_photo((1, 2, 3)).save(tmp_path / name)
    (tmp_path / "m.csv").write_text("Image Path,Label,Object ID\na.jpg,ivory,7\nb.jpg,bone,8\n")
    df = read_manifest(tmp_path / "m.csv")[0]
    assert df["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert df["label"].tolist() == ["ivory", "bone"] and df["object_id"].tolist() == ["7", "8"]
    assert photo_columns(["Title", "Image URL 2", "image-url", "Image URL 10"], PHOTO_COLUMNS, "photo", "t") == [
        "image-url", "Image URL 2", "Image URL 10"]


def test_a_json_export_is_read_as_a_table(tmp_path):
    """An API's or a database's export is often one JSON array of records, or an object holding one (with a
    count beside it); it was read as a CSV, and refused for want of columns that were all there."""
    import json

    for name in ("a.jpg", "b.jpg"):
        object_photo((1, 2, 3)).save(tmp_path / name)
    records = [{"image": "a.jpg", "label": "ivory", "object_id": "007", "title": "Box"},  # an id as written
               {"image": "b.jpg", "label": "bone", "object_id": 8.0}]  # no title: an empty cell
    (tmp_path / "array.json").write_text(json.dumps(records))
    (tmp_path / "wrapped.json").write_text(json.dumps({"total": 2, "next": None, "objects": records}))
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")  # JSON Lines, named .json
    for name in ("array.json", "wrapped.json", "lines.json"):
        df = read_manifest(tmp_path / name)[0]
        assert df["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")], name
        assert df["object_id"].tolist() == ["007", "8"] and df["title"].tolist() == ["Box", ""], name
    (tmp_path / "nolabel.json").write_text(json.dumps([records[0], {"image": "b.jpg", "label": None}]))
    with pytest.raises(ManifestError, match=r"empty label \(record 2\)"):
        read_manifest(tmp_path / "nolabel.json")
    for text, said in (("[1, 2]", "expected an array of records"),
                       ('{"a": [], "b": 3}', "found none among its keys a, b"),
                       ('{"a": [{"x": 1}], "b": [{"y": 2}]}', "found the arrays a, b"), ("[{", "not JSON (")):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(ManifestError, match=re.escape(said)):
            read_manifest(tmp_path / "bad.json")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_written_manifest_reads_back_as_it_was(tmp_path, suffix):
    from artsentry.data.manifest import write_manifest

    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    df = pd.DataFrame({"path": [str(tmp_path / "a.jpg")], "label": ["x"], "object_id": ["7"], "split": ["train"]},
                      index=[5])
    write_manifest(df, tmp_path / f"m{suffix}")
    if suffix == ".csv":
        back = pd.read_csv(tmp_path / "m.csv", dtype=str)
    else:
        import pyarrow.parquet as pq

        back = pq.read_table(tmp_path / "m.parquet").to_pandas(ignore_metadata=True)  # an index would be a column
    assert list(back.columns) == ["path", "label", "object_id", "split"]  # no index column written
    assert back.iloc[0].tolist() == [str(tmp_path / "a.jpg"), "x", "7", "train"]


def test_labels_that_differ_only_in_case_are_reported(tmp_path, caplog):
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    pd.DataFrame({"path": ["a.jpg"] * 4, "label": ["Ivory", "ivory", "ivory", "bone"]}).to_csv(tmp_path / "m.csv",
                                                                                            index=False)
    with caplog.at_level("WARNING"):
        df, report = read_manifest(tmp_path / "m.csv")
    assert sorted(set(df["label"])) == ["Ivory", "bone", "ivory"]  # kept as written: three classes
    assert report.case_clashes == ["'Ivory' (1 rows) and 'ivory' (2 rows)"]
    assert "labels that differ only in case are different classes: 'Ivory' (1 rows) and 'ivory' (2 rows)" in caplog.text
    for name in ("Ivory", "ivory"):  # label folders too
        (tmp_path / "folder" / name).mkdir(parents=True)
        object_photo((1, 2, 3)).save(tmp_path / "folder" / name / "a.jpg")
    assert read_manifest(tmp_path / "folder")[1].case_clashes == ["'Ivory' (1 rows) and 'ivory' (1 rows)"]


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_csv_exported_with_another_separator_is_read(tmp_path, sep):
    """A spreadsheet in a European locale saves "image;label;object_id" (decimal commas in the rows)."""
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "b.jpg")
    (tmp_path / "m.csv").write_text(sep.join(["image", "label", "object_id", "price"]) + "\n"
                                    + sep.join(["a.jpg", "ivory", "7", "12,50"]) + "\n"
                                    + sep.join(["b.jpg", "bone", "8", "3,00"]) + "\n")
    df, _ = read_manifest(tmp_path / "m.csv")
    assert df["label"].tolist() == ["ivory", "bone"] and df["object_id"].tolist() == ["7", "8"]
    assert df["price"].tolist() == ["12,50", "3,00"]
    # a comma-separated table whose one column holds a semicolon is left as it is
    (tmp_path / "one.csv").write_text("image\na;b.jpg\n")
    with pytest.raises(ManifestError, match="no label column"):
        read_manifest(tmp_path / "one.csv")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_a_utf16_or_utf32_table_is_read_by_its_byte_order_mark(tmp_path, encoding):
    """Excel's "Unicode Text" (UTF-16, tabs) and LibreOffice's UTF-16 CSV were read as Windows-1252: a header
    of 'ÿþi m a g e' and 'no image column'. A .tsv is a table too, its fields split at tabs."""
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "b.jpg")
    text = "image\tlabel\tobject_id\ttitle, note\na.jpg\tivory\t7\tÉléphant, 1890\nb.jpg\tbone\t8\t象牙\n"
    bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(encoding, b"")  # the plain codecs write their own
    (tmp_path / "m.tsv").write_bytes(bom + text.encode(encoding))
    df, _ = read_manifest(tmp_path / "m.tsv")
    assert df["label"].tolist() == ["ivory", "bone"] and df["title, note"].tolist() == ["Éléphant, 1890", "象牙"]
    (tmp_path / "m.csv").write_bytes(bom + text.replace("title, note", "note").replace("\t", ";").encode(encoding))
    assert read_manifest(tmp_path / "m.csv")[0]["object_id"].tolist() == ["7", "8"]
    (tmp_path / "bad.csv").write_bytes(codecs.BOM_UTF16_LE + b"i\x00m\x00\x00\xd8")  # a lone surrogate
    with pytest.raises(ManifestError, match="starts as UTF-16 text but is not"):
        read_manifest(tmp_path / "bad.csv")


def test_a_table_typed_with_a_space_after_each_comma_is_read(tmp_path):
    """"image, label, object_id" and "a.jpg, ivory, 7": a header with a space after each comma gave
    "no image column; ... (found: image, label...)", naming the very column it missed, and the cells
    " ivory" or " a.jpg" (a label of its own, a file not found). Both are read as typed without them;
    a JSON table's keys likewise."""
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "b.jpg")
    (tmp_path / "m.csv").write_text('image, label, object_id, title\na.jpg, ivory, 7, "Box, lid"\nb.jpg,bone,8,Comb\n')
    df, report = read_manifest(tmp_path / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")] and not report.missing_files
    assert df["label"].tolist() == ["ivory", "bone"] and df["object_id"].tolist() == ["7", "8"]
    assert df["title"].tolist() == ["Box, lid", "Comb"]
    (tmp_path / "m.jsonl").write_text('{" image ": "a.jpg", "label ": "ivory"}\n'
                                      '{" image ": "b.jpg", "label ": "bone"}\n')
    assert read_manifest(tmp_path / "m.jsonl")[0]["label"].tolist() == ["ivory", "bone"]


def test_a_csv_saved_by_excel_on_windows_is_read(tmp_path, caplog):
    """Excel's "CSV (comma delimited)" on Windows is Windows-1252, and in many locales ';'-separated."""
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    text = "image;label;object_id;title\r\na.jpg;ivory;1;Statuette, Côte d’Ivoire – 1890\r\n"
    (tmp_path / "m.csv").write_bytes(text.encode("cp1252"))
    with caplog.at_level("WARNING"):
        df, _ = read_manifest(tmp_path / "m.csv")
    assert df["title"].tolist() == ["Statuette, Côte d’Ivoire – 1890"] and df["label"].tolist() == ["ivory"]
    assert "not UTF-8; read as Windows-1252" in caplog.text
    (tmp_path / "u.csv").write_text(text, encoding="utf-8-sig")  # UTF-8 with a byte-order mark: as is
    assert read_manifest(tmp_path / "u.csv")[0]["title"].tolist() == ["Statuette, Côte d’Ivoire – 1890"]


def test_relative_paths_written_on_windows_are_found(tmp_path):
    """A table made on Windows lists "images\\ivory\\a.jpg": manifests, screening tables and register
    catalogues find the file; a path that exists as written is kept as written."""
    from artsentry.data.manifest import table_path
    from artsentry.index.register import read_objects
    from artsentry.screen import read_listings

    (tmp_path / "images" / "ivory").mkdir(parents=True)
    object_photo((1, 2, 3)).save(tmp_path / "images" / "ivory" / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "b.jpg")
    pd.DataFrame({"image": ["images\\ivory\\a.jpg", " b.jpg "], "label": ["ivory", "bone"],
                  "object_id": ["1", "2"]}).to_csv(tmp_path / "m.csv", index=False)
    want = [str(tmp_path / "images" / "ivory" / "a.jpg"), str(tmp_path / "b.jpg")]
    df, report = read_manifest(tmp_path / "m.csv")
    assert df["path"].tolist() == want and not report.missing_files
    assert read_listings(tmp_path / "m.csv")["image"].tolist() == want
    assert [o[1] for o in read_objects(tmp_path / "m.csv")[0]] == [[want[0]], [want[1]]]
    (tmp_path / "odd\\name.jpg").write_bytes(b"x")  # a Linux file whose name holds a backslash
    assert table_path("odd\\name.jpg", tmp_path) == str(tmp_path / "odd\\name.jpg")
    assert table_path("https://x.org/a.jpg", tmp_path) == "https://x.org/a.jpg"
    assert table_path("/abs//a.jpg", tmp_path) == "/abs//a.jpg"  # absolute: as written
    # a web page's protocol-relative <img src>: https, unless a file of that name is here
    assert table_path(" //i.ebayimg.com/images/g/abc/s-l1600.jpg", tmp_path) == \
        "https://i.ebayimg.com/images/g/abc/s-l1600.jpg"
    assert table_path("//cdn.example:8443/a.jpg", tmp_path) == "https://cdn.example:8443/a.jpg"
    assert table_path("//photos/a.jpg", tmp_path) == "//photos/a.jpg"  # no host name with a dot: a path


def test_file_urls_in_a_table_are_the_files_they_name(tmp_path):
    """A table listing photos as file:///photos/a.jpg (a browser's or an export tool's way): screen recorded
    each as 'unsupported URL scheme' for good, and register import refused it ('download it first')."""
    from artsentry.data.manifest import table_path
    from artsentry.index.register import read_objects
    from artsentry.screen import read_listings

    (tmp_path / "my photos").mkdir()
    object_photo((1, 2, 3)).save(tmp_path / "my photos" / "a.jpg")
    url = (tmp_path / "my photos" / "a.jpg").as_uri()  # file:///.../my%20photos/a.jpg
    want = str(tmp_path / "my photos" / "a.jpg")
    pd.DataFrame({"image": [url, url.replace("file://", "FILE://localhost")], "label": ["x", "y"],
                  "object_id": ["1", "2"]}).to_csv(tmp_path / "m.csv", index=False)
    assert read_manifest(tmp_path / "m.csv")[0]["path"].tolist() == [want, want]
    assert read_listings(tmp_path / "m.csv")["image"].tolist() == [want, want]
    assert [o[1] for o in read_objects(tmp_path / "m.csv")[0]] == [[want], [want]]
    assert table_path("file://nas/share/a.jpg", tmp_path) == "file://nas/share/a.jpg"  # another machine's
    assert table_path("file:///C:/photos/a.jpg", tmp_path) == "C:/photos/a.jpg"  # a Windows one: said as such


def test_xlsx_tables_are_read_from_their_first_sheet(tmp_path):
    """A spreadsheet saved as .xlsx: manifests, screening tables and register catalogues read it,
    numbers (object ids, prices) as the text the cell shows, empty cells as empty text."""
    from artsentry.index.register import read_objects
    from artsentry.screen import read_listings

    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "b.jpg")
    frame = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": ["ivory", "bone"], "object_id": [10088, 7],
                          "price": [12.5, None]})
    with pd.ExcelWriter(tmp_path / "m.xlsx") as xl:
        frame.to_excel(xl, sheet_name="listings", index=False)
        frame.iloc[:0].to_excel(xl, sheet_name="other", index=False)
    df, _ = read_manifest(tmp_path / "m.xlsx")
    assert df["label"].tolist() == ["ivory", "bone"] and df["object_id"].tolist() == ["10088", "7"]
    assert df["price"].tolist() == ["12.5", ""] and df["path"].tolist() == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    listings = read_listings(tmp_path / "m.xlsx")
    assert listings["image"].tolist() == df["path"].tolist() and listings["input_label"].tolist() == ["ivory", "bone"]
    objects, problems = read_objects(tmp_path / "m.xlsx")
    assert [o[0] for o in objects] == ["10088", "7"] and not problems


@pytest.mark.parametrize(
    "frame, message",
    [
        ({"label": ["x"]}, "no image path column"),
        ({"path": ["a.jpg"]}, "no label column"),
        ({"path": ["a.jpg"], "label": [""]}, "empty label"),
        ({"path": ["a.jpg"], "label": ["x"], "split": ["holdout"]}, "split column"),
        # image2's photos were left out without a word
        ({"image": ["a.jpg"], "image2": ["a.jpg"], "label": ["x"]}, r"several photo columns \(image, image2\): a "
                                                                     "manifest names one photo a row"),
    ],
)
def test_bad_manifests_say_why(tmp_path, frame, message):
    object_photo((1, 2, 3)).save(tmp_path / "a.jpg")
    pd.DataFrame(frame).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m.csv")



def test_rows_longer_than_the_header_never_shift_the_columns(tmp_path):
    """pandas makes a first row's extra leading fields the index, moving every value one column
    along: path <- label, label <- object id (an unquoted "Smith, John" did it). The header decides;
    extra fields that hold something are an error naming the line; a trailing comma is read past."""
    for name in ("a.jpg", "b.jpg"):
        object_photo((1, 2, 3)).save(tmp_path / name)
    (tmp_path / "trailing.csv").write_text("path,label,object_id\na.jpg,ivory,o1,\nb.jpg,bone,o2,\n")
    df, _ = read_manifest(tmp_path / "trailing.csv")
    assert df[["label", "object_id"]].values.tolist() == [["ivory", "o1"], ["bone", "o2"]]
    (tmp_path / "first.csv").write_text("path,label,object_id\na.jpg,ivory,Smith, John\nb.jpg,bone,o2\n")
    with pytest.raises(ManifestError, match=r"first.csv: line 2 has 4 fields, the header 3: a value holding ','"):
        read_manifest(tmp_path / "first.csv")
    (tmp_path / "later.csv").write_text("path;label;object_id\na.jpg;ivory;o1\nb.jpg;bone;Smith; John\n")
    with pytest.raises(ManifestError, match=r"later.csv: line 3 has 4 fields, the header 3: a value holding ';'"):
        read_manifest(tmp_path / "later.csv")


def test_typed_tables_read_as_text_like_csv(tmp_path):
    """Parquet and JSON lines keep types: a missing label was NaN and passed the empty-label check
    (a class called nan), a missing object id grouped every such photo into one object, and ids
    with a gap in their column came out as '10.0'."""
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        object_photo((1, 2, 3)).save(tmp_path / name)
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["ivory", None]}).to_parquet(tmp_path / "m.parquet")
    with pytest.raises(ManifestError, match=r"1 row\(s\) with an empty label \(row 2\)"):
        read_manifest(tmp_path / "m.parquet")
    (tmp_path / "m.jsonl").write_text('{"path": "a.jpg", "label": "ivory"}\n{"path": "b.jpg", "label": null}\n')
    with pytest.raises(ManifestError, match=r"empty label \(line 2\)"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "list.jsonl").write_text('{"path": "a.jpg", "label": ["ivory"]}\n')
    with pytest.raises(ManifestError, match="column 'label', line 1: holds a list, not a single value"):
        read_manifest(tmp_path / "list.jsonl")

    pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "y", "y"],
                  "object_id": [10.0, np.nan, np.nan]}).to_parquet(tmp_path / "ids.parquet")
    df, report = read_manifest(tmp_path / "ids.parquet")
    assert df["object_id"].tolist() == ["10", str(tmp_path / "b.jpg"), str(tmp_path / "c.jpg")]
    assert report.object_ids_blank == 2 and "2 row(s) with an empty object id" in report.lines()[0]

def _frame(n_objects=200, photos=(1, 4), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for o in range(n_objects):
        label = "a" if o % 3 else "b"
        for k in range(rng.integers(*photos)):
            rows.append({"path": f"/x/{o}_{k}.jpg", "label": label, "object_id": f"obj{o}"})
    return pd.DataFrame(rows)


def test_split_groups_objects_and_keeps_proportions():
    df = _frame()
    hashes = df["path"]  # distinct content
    out = split_manifest(df, val_fraction=0.1, test_fraction=0.2, seed=3, hashes=hashes)
    assert (out.groupby("object_id")["split"].nunique() == 1).all()
    frac = out["split"].value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.05 and abs(frac["val"] - 0.1) < 0.05
    for _, part in out.groupby("split"):
        assert abs((part["label"] == "b").mean() - (df["label"] == "b").mean()) < 0.08


def test_split_deals_each_label_its_exact_share():
    # three labels of 10, 20 and 30 single-photo objects: each label's own 20% to test, 10% to val,
    # counted in photos; an object goes wholly to the split where its first photo is dealt
    labels = ["a"] * 10 + ["b"] * 20 + ["c"] * 30
    df = pd.DataFrame({"path": [f"/p{i}" for i in range(60)], "label": labels, "object_id": [f"o{i}" for i in range(60)]})
    out = split_manifest(df, val_fraction=0.1, test_fraction=0.2, seed=0, hashes=df["path"])
    counts = out.groupby(["label", "split"]).size().unstack(fill_value=0)
    assert counts.loc["a"].to_dict() == {"test": 2, "val": 1, "train": 7}
    assert counts.loc["b"].to_dict() == {"test": 4, "val": 2, "train": 14}
    assert counts.loc["c"].to_dict() == {"test": 6, "val": 3, "train": 21}
    # a 3-photo object dealt first takes the test share whole (2 photos due, 3 taken), never cut
    df = pd.DataFrame({"path": [f"/q{i}" for i in range(12)], "label": ["a"] * 12,
                       "object_id": ["big"] * 3 + [f"o{i}" for i in range(9)]})
    for seed in range(30):
        out = split_manifest(df, val_fraction=0.1, test_fraction=0.2, seed=seed, hashes=df["path"])
        assert out.loc[out["object_id"] == "big", "split"].nunique() == 1
        assert 2 <= (out["split"] == "test").sum() <= 4 and (out["split"] == "train").sum() >= 7


@pytest.mark.parametrize("val, test", [(1.0, 0.2), (0.1, 1.0), (-0.1, 0.2), (0.1, -0.2), (0.5, 0.5), (0.6, 0.5)])
def test_split_refuses_fractions_that_leave_no_training_photos(val, test):
    df = _frame(20)
    with pytest.raises(ValueError, match="val_fraction and test_fraction"):
        split_manifest(df, val_fraction=val, test_fraction=test, hashes=df["path"])


def test_split_without_validation_or_test_photos():
    df = _frame(40)
    assert set(split_manifest(df, val_fraction=0.0, test_fraction=0.25, hashes=df["path"])["split"]) == {"train", "test"}
    assert set(split_manifest(df, val_fraction=0.25, test_fraction=0.0, hashes=df["path"])["split"]) == {"train", "val"}


def test_split_is_seeded():
    df = _frame()
    a = split_manifest(df, seed=1, hashes=df["path"])["split"]
    b = split_manifest(df, seed=1, hashes=df["path"])["split"]
    c = split_manifest(df, seed=2, hashes=df["path"])["split"]
    assert a.equals(b) and not a.equals(c)


def test_identical_files_under_two_ids_stay_together():
    df = pd.DataFrame({"path": [f"/p{i}" for i in range(6)], "label": ["a"] * 6,
                       "object_id": [f"o{i}" for i in range(6)]})
    hashes = pd.Series(["h0", "h1", "h2", "h0", "h4", "h2"])
    groups = leakage_groups(df, hashes)
    assert groups[0] == groups[3] and groups[2] == groups[5]
    assert len(set(groups)) == 4
    for seed in range(20):
        out = split_manifest(df, val_fraction=0.3, test_fraction=0.3, seed=seed, hashes=hashes)
        assert out["split"][0] == out["split"][3] and out["split"][2] == out["split"][5]


def test_a_photo_labelled_two_ways_is_warned_about(caplog):
    from artsentry.data.splits import conflicting_labels

    df = pd.DataFrame({"path": [f"/p{i}" for i in range(6)], "label": ["a", "b", "a", "a", "b", "b"],
                       "object_id": [f"o{i}" for i in range(6)]})
    hashes = pd.Series(["h0", "h0", "h2", "h2", "h4", "h5"])  # /p0 and /p1: one photo, as a and as b
    assert conflicting_labels(df, hashes) == [[0, 1]]
    with caplog.at_level("WARNING"):
        out = split_manifest(df, val_fraction=0.0, test_fraction=0.3, seed=0, hashes=hashes)
    assert "1 image file(s) are labelled more than one way" in caplog.text
    assert "/p0 as 'a', /p1 as 'b'" in caplog.text and out["split"][0] == out["split"][1]
    caplog.clear()
    split_manifest(df, seed=0, hashes=pd.Series([f"h{i}" for i in range(6)]))  # distinct photos: nothing said
    split_manifest(df.assign(label="a"), seed=0, hashes=hashes)  # the same photo twice, one label: nothing either
    assert caplog.text == ""


def test_met_ivory_duplicate_pair_is_not_split_apart():
    root = require_met_ivory()
    df, _ = read_manifest(root / "metadata.csv")
    out = split_manifest(df, seed=0)
    pair = out[out["path"].str.contains("ivory_13024|ivory_13394")]
    assert len(pair) == 2 and pair["split"].nunique() == 1


def test_existing_split_column_is_respected_and_checked():
    df = pd.DataFrame({"path": ["/a", "/b", "/c"], "label": ["x", "y", "x"], "object_id": ["1", "2", "1"],
                       "split": ["train", "test", "train"]})
    assert split_manifest(df, hashes=df["path"])["split"].tolist() == ["train", "test", "train"]
    df.loc[2, "split"] = "test"
    with pytest.raises(ManifestError, match=r"puts 1 object\(s\) \(or identical images\) in more than one split"):
        split_manifest(df, hashes=df["path"])



def test_a_batch_keeps_good_photos_in_order_and_lists_the_unreadable_ones():
    import io

    import torch
    from PIL import Image

    from artsentry.data.dataset import ImageDataset, collate, item_seed

    def png(colour):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
        return buf.getvalue()

    def to_tensor(img):
        return torch.tensor(np.asarray(img.resize((8, 8)), dtype=np.float32)).permute(2, 0, 1) / 255

    sources = [png((255, 0, 0)), b"not an image", png((0, 0, 255)), b""]
    ds = ImageDataset(sources, to_tensor, targets=[1, 0, 0, 1], names=["red.png", "text.jpg", "blue.png", "empty.jpg"],
                      quality=True)
    batch = collate([ds[i] for i in range(len(ds))])
    assert batch.x.shape == (2, 3, 8, 8) and batch.index == [0, 2] and batch.y.tolist() == [1, 0]
    assert batch.x[0, 0].min() == 1 and batch.x[1, 2].min() == 1  # red, then blue
    assert [i for i, _ in batch.errors] == [1, 3]
    assert batch.errors[0][1].startswith("text.jpg") and batch.errors[1][1].startswith("empty.jpg")
    assert all("\n" not in reason for _, reason in batch.errors)
    assert [q.long_side for q in batch.quality] == [64, 64]
    assert collate([ds[i] for i in range(len(ds))][:2]).quality is not None
    plain = ImageDataset(sources, to_tensor)
    assert plain.targets == [-1] * 4 and collate([plain[0]]).quality is None
    pairs = ImageDataset(sources, lambda img: (to_tensor(img), to_tensor(img)[:, :4]))  # two views of each photo
    x, half = collate([pairs[i] for i in range(len(pairs))]).x
    assert x.shape == (2, 3, 8, 8) and half.shape == (2, 3, 4, 8) and torch.equal(x[:, :, :4], half)
    nothing = collate([ds[1], ds[3]])  # no readable photo: an empty batch, both listed
    assert nothing.x.numel() == 0 and nothing.index == [] and len(nothing.errors) == 2

    # a random transform seeded per photo: the same draw for photo i in any order, the caller's RNG untouched
    def noisy(img):
        return torch.rand(3)

    seeded = ImageDataset(sources[:1] + sources[2:3], noisy, draw_seed=5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    a1, b1 = seeded[1][0], seeded[0][0]
    assert torch.equal(torch.get_rng_state(), before)
    b2, a2 = seeded[0][0], seeded[1][0]
    assert torch.equal(a1, a2) and torch.equal(b1, b2) and not torch.equal(a1, b1)
    torch.manual_seed(item_seed(5, 1))
    assert torch.equal(torch.rand(3), a1)
    assert item_seed(5, 1) != item_seed(5, 0) and item_seed(5, 1) != item_seed(6, 1)


def test_paths_written_from_the_working_folder_are_said_to_be_so(tmp_path, monkeypatch):
    """A table in tables/ naming photos as photos/a.jpg, from the folder its author stood in: every photo
    'not found', with no word of why."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "tables").mkdir()
    object_photo((1, 2, 3)).save(tmp_path / "photos" / "a.jpg")
    object_photo((3, 2, 1)).save(tmp_path / "tables" / "b.jpg")
    pd.DataFrame({"image": ["photos/a.jpg", "b.jpg"], "label": ["x", "y"]}).to_csv(tmp_path / "tables" / "m.csv",
                                                                                 index=False)
    monkeypatch.chdir(tmp_path)
    df, report = read_manifest(tmp_path / "tables" / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "tables" / "b.jpg")]
    assert report.lines()[1] == (
        "1 image path(s) are not beside the table but are beside the current folder (e.g. photos/a.jpg): a table's "
        f"relative paths are read from its own folder ({tmp_path / 'tables'}); write them from there, or as "
        "absolute paths")
    monkeypatch.chdir(tmp_path / "tables")  # from the table's own folder the paths are as they should be
    assert read_manifest(tmp_path / "tables" / "m.csv")[1].paths_hint == ""
    pd.DataFrame({"image": ["C:\\photos\\a.jpg", "b.jpg"], "label": ["x", "y"]}).to_csv(
        tmp_path / "tables" / "m.csv", index=False)  # made on a PC: its drive's path, not the table's folder's
    df, report = read_manifest(tmp_path / "tables" / "m.csv")
    assert df["path"].tolist() == [str(tmp_path / "tables" / "b.jpg")]
    assert report.lines()[0] == "1 listed image(s) not found and skipped: C:\\photos\\a.jpg"
    assert report.lines()[1].startswith("1 image path(s) are Windows paths (e.g. C:\\photos\\a.jpg), which this")
