"""Imported first by every workflow script: this checkout's noisekd goes ahead of any installed copy.

A job then runs the code that provenance's git commit names, also inside a conda env built from
envs/ (which holds only the dependencies, since conda cannot install a path relative to the
env file that Snakemake copies) and beside a stale non-editable install.  Snakemake puts this folder
on each script's path; its parent is the checkout.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
