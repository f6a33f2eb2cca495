"""decode: from a log record to the bytes the sender sent.

Records arrive with the probe's bytes escaped by rsyslog (``#015``), split
over HOSTNAME/TAG/MSG by its RFC 3164 parser and re-split by Fluentd's or
Vector's syslog parsers (see FIELD_GUIDE). This package undoes both:

* ``escape`` / ``unescape``: rsyslog's control-character escaping, per
  dialect, with an evidence score deciding escaped vs literal text.
* ``parse_syslog_line`` / ``detect_file_format``: one physical line of an
  rsyslog output file into its properties (a record for ``rebuild``);
  ``parse_framing_error``: imtcp's octet-counting errors (bytes lost).
* ``rebuild``: one record (any known shape) into the line that was sent,
  plus the other plausible readings, for the matcher.

Nothing here does I/O; everything takes bytes/records and returns values.
"""

from ._escape import DECODE_MIN, DIALECTS, Unescaped, escape, to_bytes, unescape, unescape_as
from ._rebuild import PAYLOAD_FIELDS, SHAPES, SOURCE_FIELDS, Rebuilt, rebuild
from ._syslog import (FORMATS, FramingError, SyslogLine, detect_file_format, parse_framing_error,
                      parse_syslog_line, split_tag)

__all__ = [
    "DIALECTS", "DECODE_MIN", "Unescaped", "escape", "unescape", "unescape_as", "to_bytes",
    "Rebuilt", "rebuild", "SHAPES", "SOURCE_FIELDS", "PAYLOAD_FIELDS",
    "FORMATS", "SyslogLine", "parse_syslog_line", "detect_file_format", "split_tag",
    "FramingError", "parse_framing_error",
]
