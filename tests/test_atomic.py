import json

import pytest

from tbpr.atomic import atomic_write, write_json, write_text


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json(target, {"a": 1})

    def broken(fh):
        fh.write(b'{"a": 2')
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_write_text_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b.txt"
    write_text(target, "one")
    write_text(target, "two ✓")
    assert target.read_text(encoding="utf-8") == "two ✓"


def test_written_files_get_the_usual_permissions_not_the_temp_files(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    target = write_text(tmp_path / "report.md", "x")
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
