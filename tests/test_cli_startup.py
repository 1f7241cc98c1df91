"""`vitkit --help` and `vitkit CMD --help` answer without importing torch (the 1.5 s of a cold start).

Deterministic rather than timed: one fresh interpreter prints every command's help and which heavy modules it
imported on the way; the help texts are then checked against the full parsers built here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from vitkit.cli.main import COMMANDS, build_parser

# train, finetune and pretrain build their flags from the recipe's dataclasses, whose modules import torch.
RECIPE_COMMANDS = {"train", "finetune", "pretrain"}
FAST_COMMANDS = [name for name in COMMANDS if name not in RECIPE_COMMANDS]
HEAVY = ("torch", "numpy", "PIL", "vitkit.models", "vitkit.training", "vitkit.inference", "vitkit.checkpoints")

PROBE = """
import contextlib, io, json, sys
from vitkit.cli.main import main
texts = {}
for argv in [[], *[[name] for name in sys.argv[2:]], ["data", "pack"], ["data", "verify"]]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    texts[" ".join(argv)] = out.getvalue()
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"texts": texts, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    """Every fast command's --help, from one fresh interpreter, and the heavy modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *FAST_COMMANDS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


def test_help_imports_neither_torch_nor_the_heavy_packages(probe):
    assert probe["heavy"] == []


def test_import_vitkit_is_light_and_its_names_still_load():
    code = (
        "import sys, vitkit; light = 'torch' not in sys.modules; vitkit.create_model; "
        "print(light, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["True", "True"]


def test_top_level_help_lists_every_command(probe):
    for name in COMMANDS:
        assert f"    {name} " in probe["texts"][""] or f"    {name}\n" in probe["texts"][""], name


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of `parser` by name (none for most commands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize("words", [[name] for name in FAST_COMMANDS] + [["data", "pack"], ["data", "verify"]])
def test_each_help_is_complete(probe, words):
    parser = sub_parsers(build_parser(words[0]))[words[0]]
    for word in words[1:]:
        parser = sub_parsers(parser)[word]
    text = probe["texts"][" ".join(words)]
    for action in parser._actions:
        for option in action.option_strings[-1:]:
            assert option in text, f"vitkit {' '.join(words)} --help lacks {option}"
    for name in sub_parsers(parser):
        assert name in text
