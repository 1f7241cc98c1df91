"""`vitkit --help` and `vitkit CMD --help` answer without importing torch (the 1.5 s of a cold start).

Deterministic rather than timed: a fresh interpreter prints the helps and which heavy modules it imported on the
way; the help texts are then checked against the full parsers built here. train, finetune and pretrain build
their flags from the recipe's dataclasses (`vitkit.training.config`, the objectives' settings, the model
configs), which are torch-free modules of otherwise heavy packages: they get an interpreter of their own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from vitkit.cli.main import COMMANDS, build_parser

RECIPE_COMMANDS = ["train", "finetune", "pretrain"]
FAST_COMMANDS = [name for name in COMMANDS if name not in RECIPE_COMMANDS]
HEAVY = ("torch", "numpy", "PIL", "vitkit.checkpoints")
# Packages whose torch-free modules only the recipe commands' help reads; the other helps open none of them.
RECIPE_PACKAGES = ("vitkit.models", "vitkit.training", "vitkit.inference")

PROBE = """
import contextlib, io, json, sys
from vitkit.cli.main import main
texts = {}
for argv in json.loads(sys.argv[2]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([*argv, "--help"])
    texts[" ".join(argv)] = out.getvalue()
heavy = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"texts": texts, "heavy": heavy}))
"""


def run_probe(heavy: tuple[str, ...], argvs: list[list[str]]) -> dict:
    """The help of each argv, from one fresh interpreter, and which of the `heavy` modules it imported."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(heavy), json.dumps(argvs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def probe() -> dict:
    """The top level's and every fast command's --help, and the heavy modules and packages they imported."""
    argvs = [[], *[[name] for name in FAST_COMMANDS], ["data", "pack"], ["data", "verify"]]
    return run_probe(HEAVY + RECIPE_PACKAGES, argvs)


@pytest.fixture(scope="module")
def recipe_probe() -> dict:
    """train's, finetune's and pretrain's --help, and the heavy modules they imported."""
    return run_probe(HEAVY, [[name] for name in RECIPE_COMMANDS])


def test_help_imports_neither_torch_nor_the_heavy_packages(probe):
    assert probe["heavy"] == []


def test_recipe_commands_help_imports_no_torch(recipe_probe):
    assert recipe_probe["heavy"] == []


def test_import_vitkit_is_light_and_its_names_still_load():
    code = (
        "import sys, vitkit; light = 'torch' not in sys.modules; vitkit.create_model; "
        "print(light, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["True", "True"]


def test_lazy_packages_load_every_name():
    """Each name of the packages that load lazily is there; `vitkit.inference.evaluate` stays the function even when
    its module (of the same name) is imported first."""
    code = (
        "import importlib, types\n"
        "from vitkit.inference.evaluate import eval_batches\n"
        "import vitkit.inference as inference\n"
        "from vitkit.inference import evaluate\n"
        "assert isinstance(evaluate, types.FunctionType) and inference.evaluate is evaluate, evaluate\n"
        "for package in ('vitkit.models', 'vitkit.data', 'vitkit.inference', 'vitkit.training'):\n"
        "    module = importlib.import_module(package)\n"
        "    missing = [name for name in module.__all__ if getattr(module, name, None) is None]\n"
        "    assert not missing and set(module.__all__) <= set(dir(module)), (package, missing)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr


def test_top_level_help_lists_every_command(probe):
    for name in COMMANDS:
        assert f"    {name} " in probe["texts"][""] or f"    {name}\n" in probe["texts"][""], name


def sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The sub-parsers of `parser` by name (none for most commands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def check_help_is_complete(text: str, words: list[str]) -> None:
    """`text` names every option (and sub-command) of the parser of `vitkit WORDS`."""
    parser = sub_parsers(build_parser(words[0]))[words[0]]
    for word in words[1:]:
        parser = sub_parsers(parser)[word]
    for action in parser._actions:
        for option in action.option_strings[-1:]:
            assert option in text, f"vitkit {' '.join(words)} --help lacks {option}"
    for name in sub_parsers(parser):
        assert name in text


@pytest.mark.parametrize("words", [[name] for name in FAST_COMMANDS] + [["data", "pack"], ["data", "verify"]])
def test_each_help_is_complete(probe, words):
    check_help_is_complete(probe["texts"][" ".join(words)], words)


@pytest.mark.parametrize("name", RECIPE_COMMANDS)
def test_each_recipe_command_help_is_complete(recipe_probe, name):
    text = recipe_probe["texts"][name]
    check_help_is_complete(text, [name])
    assert "--mpp-target" in text and "--teacher" in text and "--hidden-dim" in text  # every objective's, the ViT's
