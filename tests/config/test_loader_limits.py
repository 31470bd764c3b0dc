"""The config loader refuses what a YAML parser would otherwise happily do to a user: expand an
alias bomb, decode a binary file, read a huge file, recurse without end."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

import xprospect
from xprospect.config import load_config
from xprospect.config.engine import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    parse_override,
    read_mapping,
    read_yaml_file,
    safe_load_yaml,
)
from xprospect.errors import ConfigError, ResourceLimitError

ALIAS_BOMB = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *[f"{chr(98 + i)}: &{chr(98 + i)} [{','.join([f'*{chr(97 + i)}'] * 9)}]" for i in range(8)],
        "steps: *i",
    ]
)


def test_shipped_configs_use_no_anchor_or_alias():
    files = sorted((Path(xprospect.__file__).parent / "configs").rglob("*.yaml"))
    assert len(files) > 5
    for path in files:
        read_mapping(path)


def test_an_alias_bomb_is_refused_at_its_first_anchor_without_expanding(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(ConfigError) as info:
            read_mapping(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 1.0
    assert peak < 20 << 20
    text = str(info.value)
    assert text.startswith(f"{path}: line 1, column 4: anchors (&a) are not allowed")
    assert "\n" not in text


def test_aliases_and_anchors_are_refused_with_their_position(tmp_path):
    with pytest.raises(ConfigError, match=r"line 2, column 4: aliases \(\*x\) are not allowed"):
        safe_load_yaml("a: 1\nb: *x\n", "c.yaml")
    with pytest.raises(ConfigError, match=r"anchors \(&base\)"):
        safe_load_yaml("base: &base {steps: 1}\nother:\n  <<: *base\n", "c.yaml")
    with pytest.raises(ConfigError, match="anchors"):
        safe_load_yaml("a: &s scalar\n", "c.yaml")


def test_a_binary_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: not a text file")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not a UTF-8 text file \(byte 0xe9 at offset 9\)"):
        read_mapping(latin1)


def test_a_file_over_the_size_limit_is_not_read(tmp_path):
    assert MAX_CONFIG_BYTES == 1 << 20
    path = tmp_path / "big.yaml"
    path.write_text("name: x\n" + "# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ResourceLimitError, match="larger than the limit of 1024 KiB"):
        read_mapping(path)
    with pytest.raises(ResourceLimitError, match="100 KiB"):
        read_yaml_file(tmp_path / "big.yaml", max_bytes=100 << 10)


@pytest.mark.parametrize(
    "text",
    ["[" * 40 + "]" * 40, "[" * 200_000, "a:\n" + "".join(" " * i + "b:\n" for i in range(1, 40))],
    ids=["flow", "unclosed-100k", "block"],
)
def test_deep_nesting_is_refused(text):
    assert MAX_CONFIG_DEPTH == 32
    with pytest.raises(ResourceLimitError, match="nest deeper than the limit of 32 levels"):
        safe_load_yaml(text, "deep.yaml")


def test_nesting_within_the_limit_loads():
    value = safe_load_yaml("[" * 32 + "]" * 32)
    depth = 0
    while isinstance(value, list):
        depth += 1
        value = value[0] if value else None
    assert depth == 32
    with pytest.raises(ResourceLimitError):
        safe_load_yaml("[" * 5 + "]" * 5, max_depth=4)


def test_python_tags_stay_refused():
    with pytest.raises(ConfigError, match="invalid YAML"):
        safe_load_yaml("a: !!python/object/apply:os.system ['true']\n")


def test_a_top_level_that_is_not_a_mapping_is_shown_short(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("[" + ", ".join(["12345"] * 1000) + "]\n")
    with pytest.raises(ConfigError) as info:
        read_mapping(path)
    assert len(str(info.value)) < len(str(path)) + 150


def test_set_overrides_do_not_expand_aliases_either():
    assert parse_override("training.steps=*x") == ("training.steps", "*x")
    assert parse_override("a=&x [1, *x]") == ("a", "&x [1, *x]")
    assert parse_override("a=[1, 2]") == ("a", [1, 2])


def test_a_folder_or_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        read_yaml_file(tmp_path)
