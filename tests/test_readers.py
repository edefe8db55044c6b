"""Readers: every format through the one mechanism, recognition, splits, pid remapping, errors."""

from __future__ import annotations

import json

import pytest

from fixtures.dataset_files import FIXTURES, make_dataset, write_records
from tbpr.data.readers import FORMATS, FormatSpec, find_annotation, get_format, read_dataset, register_format
from tbpr.errors import DataError


def test_cuhk_pedes_manifest(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    m = read_dataset(root)
    assert m.name == "cuhk"
    assert m.image_root == root / "imgs"
    assert m.annotation_file == root / "reid_raw.json"
    assert [im.id for im in m.images] == list(range(7))
    assert [im.path for im in m.images][:2] == ["CUHK01/a.jpg", "CUHK01/b.jpg"]
    # train raw ids 5, 2, 5, 9 -> sorted 2, 5, 9 -> 0, 1, 2; val/test keep raw ids
    assert [im.pid for im in m.images] == [1, 0, 1, 2, 20, 30, 31]
    assert [im.split for im in m.images] == ["train"] * 4 + ["val", "test", "test"]
    assert [c.id for c in m.captions] == list(range(11))
    assert [c.image_id for c in m.captions] == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 6]
    assert m.captions[3].text == "The man walks in red clothes."
    assert {c.source for c in m.captions} == {"human"}
    assert all(m.image_path(im).is_file() for im in m.images)


@pytest.mark.parametrize("folder", ["icfg", "icfg_underscore"])
def test_icfg_pedes_accepts_both_file_names(tmp_path, folder):
    root = make_dataset(folder, tmp_path)
    spec, file = find_annotation(root)
    assert spec.name == "icfg-pedes"
    assert file.name in ("ICFG-PEDES.json", "ICFG_PEDES.json") and file.parent == root
    m = read_dataset(root)
    assert [im.pid for im in m.images] == [1, 1, 0, 3001]  # train raw 7, 101 -> 0, 1
    assert [im.path for im in m.images][0] == "train/0101/0101_001.jpg"


def test_rstpreid_reads_img_path_and_maps_other_splits_to_val(tmp_path):
    root = make_dataset("rstp", tmp_path)
    assert find_annotation(root)[0].name == "rstpreid"
    m = read_dataset(root)
    assert [im.path for im in m.images] == [
        "0001_c1_0001.jpg",
        "0001_c2_0002.jpg",
        "0040_c3_0001.jpg",
        "0050_c1_0001.jpg",
    ]
    assert [im.split for im in m.images] == ["train", "train", "val", "test"]  # 'valid' -> val
    assert [im.pid for im in m.images] == [0, 0, 40, 50]
    assert len(m.captions) == 8


def test_generic_jsonl_skips_blank_lines(tmp_path):
    root = make_dataset("jsonl", tmp_path)
    assert find_annotation(root)[0].name == "jsonl"
    m = read_dataset(root)
    assert [im.pid for im in m.images] == [1, 1, 0, 77]  # train raw 12, 12, 4
    assert [c.text for c in m.captions][1:3] == ["Orange safety vest and a helmet.", "A worker in orange."]


def test_format_override_beats_recognition(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    (root / "annotations.jsonl").write_text((FIXTURES / "jsonl" / "annotations.jsonl").read_text())
    assert len(read_dataset(root).images) == 7  # recognized: reid_raw.json comes first
    assert len(read_dataset(root, format="jsonl").images) == 4
    assert len(read_dataset(root, format="CUHK-PEDES").images) == 7  # names are case-insensitive


def test_format_override_needs_that_formats_file(tmp_path):
    root = make_dataset("cuhk", tmp_path)
    with pytest.raises(DataError, match=r"data_captions\.json \(rstpreid\)") as err:
        read_dataset(root, format="rstpreid")
    assert "reid_raw.json" not in str(err.value)


def test_missing_annotation_names_folder_and_expected_files(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message
    for name in (
        "reid_raw.json",
        "ICFG-PEDES.json",
        "ICFG_PEDES.json",
        "data_captions.json",
        "annotations.jsonl",
    ):
        assert name in message


def test_missing_folder_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match=r"unknown dataset format 'market'.*cuhk-pedes"):
        get_format("market")


def test_registered_format_is_read_by_the_same_mechanism(tmp_path):
    spec = register_format(FormatSpec("test-custom", ("custom.json",), "image"))
    try:
        records = [{"image": "x.jpg", "id": 3, "split": "train", "captions": ["a b"]}]
        (tmp_path / "custom.json").write_text(json.dumps(records))
        m = read_dataset(tmp_path)
        assert find_annotation(tmp_path)[0] is spec
        assert [(im.path, im.pid) for im in m.images] == [("x.jpg", 0)]
    finally:
        del FORMATS["test-custom"]


def test_malformed_json_reports_line_and_column(tmp_path):
    (tmp_path / "reid_raw.json").write_text('[\n  {"split": "train",\n   "id": 1 "captions": []}\n]')
    with pytest.raises(DataError, match=r"reid_raw\.json: invalid JSON at line 3, column 12"):
        read_dataset(tmp_path)


def test_malformed_jsonl_reports_every_bad_line(tmp_path):
    good = json.dumps({"file_path": "a.jpg", "id": 1, "split": "train", "captions": ["x"]})
    (tmp_path / "annotations.jsonl").write_text(f"{good}\n{{oops\n{good}\n[1,\n")
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    assert "line 2: invalid JSON at column 2" in str(err.value)
    assert "line 4: invalid JSON" in str(err.value)


def test_utf8_bom_is_accepted_other_encodings_are_reported(tmp_path):
    records = [{"file_path": "é.jpg", "id": 1, "split": "train", "captions": ["café"]}]
    (tmp_path / "reid_raw.json").write_bytes(
        b"\xef\xbb\xbf" + json.dumps(records, ensure_ascii=False).encode()
    )
    assert read_dataset(tmp_path).captions[0].text == "café"
    (tmp_path / "reid_raw.json").write_bytes(json.dumps(records, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError, match=r"reid_raw\.json: not UTF-8 text \(byte 16\)"):
        read_dataset(tmp_path)


def test_non_list_json_is_refused(tmp_path):
    (tmp_path / "reid_raw.json").write_text('{"images": []}')
    with pytest.raises(DataError, match="expected a JSON list of records, got dict"):
        read_dataset(tmp_path)


def test_missing_and_wrongly_typed_fields_name_record_and_field(tmp_path):
    ok = {"file_path": "a.jpg", "id": 1, "split": "train", "captions": ["x"]}
    records = [
        ok,
        {**ok, "id": "1"},
        {k: v for k, v in ok.items() if k != "captions"},
        {**ok, "captions": "just one"},
        {**ok, "captions": ["x", 3]},
        {**ok, "id": True},
        "text",
    ]
    write_records(tmp_path, records)
    with pytest.raises(DataError) as err:
        read_dataset(tmp_path)
    message = str(err.value)
    assert "6 record field problems" in message
    assert "record 1: field 'id' must be an integer from 0 to 9223372036854775807, got \"1\"" in message
    assert "record 2: field 'captions' is missing" in message
    assert "record 3: field 'captions' must be a list of strings" in message
    assert "record 4: field 'captions' must be a list of strings" in message
    assert "record 5: field 'id' must be an integer from 0 to 9223372036854775807, got true" in message
    assert "record 6: expected a JSON object, got str" in message
    assert "record 0" not in message
    assert "tbpr data check" in message


def test_jsonl_field_problems_name_the_line(tmp_path):
    (tmp_path / "annotations.jsonl").write_text('{"file_path": "a.jpg", "id": 1, "split": "train"}\n')
    with pytest.raises(DataError, match="line 1: field 'captions' is missing"):
        read_dataset(tmp_path)
