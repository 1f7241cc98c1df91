"""Run the main job on the embedded default (placeholder until the training job lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `vitkit demo`."""


def run(args: argparse.Namespace) -> int:
    """Print the model table."""
    from vitkit.cli.main import main

    return main(["models"])
