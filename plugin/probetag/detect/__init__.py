"""detect: is this log line part of a scanner's probe, and which one?

Where a record is matched. The catalogue (``_catalogue``, data files in
``catalogue/``) is compiled once into a ``Detector`` (``_engine``), which
takes one decoded line and returns ``Match`` objects. ``Correlator``
(``_correlate``) keeps per-source state so that lines that say nothing on
their own (a lone ``\\r``) are decided by their neighbours, and summarises
scans. ``Enricher`` (``_enrich``) is the record path that ties decoding,
matching, correlation and actions together; ``probetag._stage`` calls it
only for records the chunk prefilter (``_prefilter``) hit. Lines the
catalogue names no probe in get a second chance from ``_openings``: any
client's opening bytes (``_clients``: TLS ClientHello with JA3/JA4, HTTP,
SSH, SIP, RDP, SMB, RESP, memcached, DNS, IKE) named by protocol, and by
client only from evidence the known-client table holds. No I/O.
"""

from ._catalogue import FAMILY_RANK, CatalogueError, Signature, load_catalogue
from ._correlate import Correlator, Verdict
from ._engine import Detector, Match
from ._enrich import Enricher, build_detection, prefilter_fragments, show_bytes
from ._prefilter import LiteralSet, Prefilter, available_backends

__all__ = [
    "CatalogueError",
    "FAMILY_RANK",
    "Signature",
    "load_catalogue",
    "Detector",
    "Match",
    "Correlator",
    "Verdict",
    "Enricher",
    "build_detection",
    "prefilter_fragments",
    "show_bytes",
    "LiteralSet",
    "Prefilter",
    "available_backends",
]
