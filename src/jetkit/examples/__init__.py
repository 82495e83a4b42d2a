"""Runnable examples that use only jetkit's public API."""
