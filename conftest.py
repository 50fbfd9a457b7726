"""This repository's suite: the self-tests in tests/ and the shipped compliance tests.

The mil-assert plugin comes from the installed package (entry point ``pytest11``).
"""
