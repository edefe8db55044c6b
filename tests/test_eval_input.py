"""``tbpr eval`` checks the split it evaluates first: a bad test image or record is one clear error."""

import json
import logging
import shutil

import pytest

from tbpr.cli import main


@pytest.fixture
def data(tmp_path, synth_tiny):
    return shutil.copytree(synth_tiny, tmp_path / "data")


def first_test_record(data) -> dict:
    return next(r for r in json.loads((data / "reid_raw.json").read_text()) if r["split"] == "test")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_bad_test_image_is_one_clear_error(tiny_run, data, caplog, damage):
    image = data / "imgs" / first_test_record(data)["file_path"]
    if damage == "missing":
        image.unlink()
    else:
        image.write_bytes(image.read_bytes()[:100])
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(["eval", str(tiny_run), "--data", str(data), "--num-workers", "0"]) == 2
    (error,) = [r.message for r in caplog.records if r.levelname == "ERROR"]
    assert "test split, failed the check" in error and first_test_record(data)["file_path"] in error
    assert "Traceback" not in caplog.text


def test_a_huge_person_id_is_one_clear_error(tiny_run, data, caplog):
    records = json.loads((data / "reid_raw.json").read_text())
    next(r for r in records if r["split"] == "test")["id"] = 10**30
    (data / "reid_raw.json").write_text(json.dumps(records))
    with caplog.at_level(logging.ERROR, logger="tbpr"):
        assert main(["eval", str(tiny_run), "--data", str(data), "--num-workers", "0"]) == 2
    assert "field 'id' must be an integer from 0 to" in caplog.text


def test_a_bad_train_image_does_not_stop_evaluating_test(tiny_run, data, capsys):
    train = next(r for r in json.loads((data / "reid_raw.json").read_text()) if r["split"] == "train")
    (data / "imgs" / train["file_path"]).unlink()
    assert main(["eval", str(tiny_run), "--data", str(data), "--num-workers", "0"]) == 0
