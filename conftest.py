"""Loads the mil-assert pytest plugin for this repository's suite."""

pytest_plugins = ["mil_assert.plugin"]
