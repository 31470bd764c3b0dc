"""xprospect.utils.read_json_file: the one bounded reader of JSON files users and programs wrote
(dataset manifests, split files, style metadata)."""

from __future__ import annotations

import pytest

from xprospect.errors import ConfigError, ImageFormatError, MissingDataError, ResourceLimitError
from xprospect.utils import MAX_JSON_DEPTH, json_depth, read_json_file


def test_reads_plain_json_and_a_bom(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('{"a": [1, {"b": null}]}')
    assert read_json_file(path) == {"a": [1, {"b": None}]}
    path.write_bytes(b"\xef\xbb\xbf[1]")
    assert read_json_file(path) == [1]


def test_depth_is_measured_without_recursion():
    assert json_depth(1) == 0 and json_depth([]) == 1 and json_depth({"a": [[]]}) == 3
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth(deep) == 100_001


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH + 1, 100_000])
def test_deep_nesting_is_a_resource_limit(tmp_path, levels):
    path = tmp_path / "deep.json"
    path.write_text("[" * levels + "]" * levels)
    with pytest.raises(ResourceLimitError, match=r"deep\.json: JSON file nests deeper than"):
        read_json_file(path)


def test_size_limit_is_checked_before_parsing(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 1000 + "0]")
    with pytest.raises(ResourceLimitError, match="larger than the limit of 100 bytes"):
        read_json_file(path, max_bytes=100)


def test_bad_content_uses_the_callers_error_class(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"a": 1,\n "b": }')
    with pytest.raises(
        ConfigError, match=r"m.json: split file is not valid JSON: line 2, column 7"
    ):
        read_json_file(path, what="split file")
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ImageFormatError, match=r"not UTF-8 text \(byte 0xff at offset 7\)"):
        read_json_file(path, error=ImageFormatError)
    with pytest.raises(MissingDataError, match="no JSON file here"):
        read_json_file(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="cannot read"):
        read_json_file(tmp_path)
