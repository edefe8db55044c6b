"""Tests that need a real component outside Python (a browser, Debian's WordNet, an LLM's weights).

Without the component such a test is skipped on a developer's machine, but under CI (environment
variable ``CI`` set, other than ``false``/``0``) it fails: CI installs every component, so a missing one
there is a broken set-up, not a reason to pass.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def missing(component: str, install: str) -> NoReturn:
    """Skip because ``component`` is missing (``install`` says how to get it); fail instead under CI."""
    if under_ci():
        pytest.fail(f"{component} is missing and CI is set: CI must run this test ({install})")
    pytest.skip(f"{component} is missing ({install})")
