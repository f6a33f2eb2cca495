"""Suite-wide settings.

Hypothesis keeps no example database: a failure it finds is reported with
the failing input (add it as an ``@example``), and nothing is written into
the tree between runs (its other caches go to the system temp directory,
not ``.hypothesis/``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "probetag-hypothesis")
settings.register_profile("probetag", database=None)
settings.load_profile("probetag")
