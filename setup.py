"""Build of the optional C accelerator (everything else is in pyproject.toml).

``probetag._speedups`` speeds up the processing stage's per-entry walk. It is
optional: when no C compiler or Python headers are present the build skips it
(``optional=True``) and probetag runs its pure-Python path, which gives the
same results. ``PROBETAG_PURE=1`` forces that path at run time.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("probetag._speedups", ["plugin/probetag/_speedups.c"], optional=True)])
