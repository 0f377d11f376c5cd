"""Package build entry point; metadata and dependencies live in setup.cfg."""

from setuptools import setup

setup()
