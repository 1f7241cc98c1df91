"""vitkit.configs: the one dataclass <-> dict <-> flags mechanism, on a config of its own."""

from __future__ import annotations

import argparse
import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vitkit import configs
from vitkit.configs import knob


@dataclass
class Inner:
    rate: float = knob(0.5, "a rate")


@dataclass
class Outer:
    size: int = knob(3, "a size")
    name: str | None = knob(None, "a name", flag="--label")
    pair: tuple[int, int] = knob((1, 2), "two ints")
    on: bool = knob(False, "a switch")
    inner: Inner = field(default_factory=Inner)


def test_update_checks_types_and_recurses_into_nested_dataclasses() -> None:
    out = configs.update(Outer(), {"size": 4, "pair": [5, 6], "inner.rate": 1, "name": "x"}, "outer")
    assert out == Outer(size=4, name="x", pair=(5, 6), inner=Inner(rate=1.0))
    assert configs.build(Outer, {"inner": {"rate": 2}}, "outer").inner.rate == 2.0
    with pytest.raises(ValueError, match=r"origin: unknown key outer.sise; valid keys of 'outer': size, name, pair"):
        configs.update(Outer(), {"sise": 1}, "outer", "origin")
    with pytest.raises(ValueError, match=r"outer.inner.rate must be a number, got 'high'"):
        configs.update(Outer(), {"inner": {"rate": "high"}}, "outer")
    with pytest.raises(ValueError, match=r"outer.pair must be a list of 2 values \(\[int, int\]\), got \[1\]"):
        configs.update(Outer(), {"pair": [1]}, "outer")
    with pytest.raises(ValueError, match=r"outer.inner must be a mapping of keys to values, got 3"):
        configs.update(Outer(), {"inner": 3}, "outer")


def test_nest_and_plain() -> None:
    assert configs.nest({"a.b": 1, "a": {"c": 2}, "d": 3}) == {"a": {"b": 1, "c": 2}, "d": 3}
    assert configs.plain(Outer()) == {"size": 3, "name": None, "pair": [1, 2], "on": False, "inner": {"rate": 0.5}}


def test_flags_come_from_the_fields() -> None:
    found = {k.key: k for k in configs.knobs(Outer(), "outer")}
    assert [k.flag for k in found.values()] == ["--size", "--label", "--pair", "--on", "--inner-rate"]
    parser = argparse.ArgumentParser()
    for knob_ in found.values():
        configs.add_flag(parser, knob_)
    args = configs.given_flags(parser.parse_args(["--label", "none", "--pair", "7", "8", "--on", "--inner-rate", "2"]))
    assert args == {"outer.name": None, "outer.pair": (7, 8), "outer.on": True, "outer.inner.rate": 2.0}
    assert configs.given_flags(parser.parse_args([])) == {}  # absent flags leave the recipe alone
    assert "a name [outer.name, default None]" in parser.format_help()


def test_the_mechanism_is_a_leaf_the_models_can_use() -> None:
    source = Path(configs.__file__).read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m for m in imported if m.startswith("vitkit")} == {"vitkit.errors"}
