"""`visiongate data import|validate|stats` (to be filled in)."""

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register this module's subcommands on the `visiongate` parser."""
