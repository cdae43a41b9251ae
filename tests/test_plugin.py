"""The twistd plugin ships with a normal install and documents its options."""

import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins


def test_plugin_is_discovered():
    """getPlugins(IServiceMaker) finds the shiftpeer plugin, pointing at shiftpeer.tap."""
    makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
    assert "shiftpeer" in makers
    assert makers["shiftpeer"].module == "shiftpeer.tap"


def test_twistd_help_outside_checkout(tmp_path):
    """`twistd shiftpeer --help`, run from a directory outside the checkout, lists --data."""
    twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
    out = subprocess.run(
        [twistd, "shiftpeer", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "--data" in out.stdout
