"""The ``jetkit`` command line."""

from __future__ import annotations


def main() -> None:
    print("jetkit demo: not yet implemented")
