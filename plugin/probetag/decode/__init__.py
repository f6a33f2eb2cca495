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
  plus the other plausible readings, for the matcher. ``rebuild_with``,
  ``senders``, ``str_keys`` and ``memo_key`` split it up for a caller that
  memoises it (``memo_key``: what the result depends on in the payload
  fields; ``Senders.asked``: in the sender fields). ``plan_for`` works out
  once per set of record keys what those find from the keys alone;
  ``planned_senders`` and ``planned_key`` then read only the values.

Nothing here does I/O; everything takes bytes/records and returns values.
"""

from ._escape import DECODE_MIN, DIALECTS, Unescaped, escape, to_bytes, unescape, unescape_as
from ._rebuild import (ABSENT, PAYLOAD_FIELDS, READ_FIELDS, SENDER, SHAPES, SOURCE_FIELDS, Rebuilt, Senders,
                       RecordPlan, answers_alike, fields_read, memo_key, plan_for, planned_key, planned_senders,
                       rebuild, rebuild_with, sender_fields, sender_hostname, senders, str_keys)
from ._syslog import (FORMATS, SYSLOG_NG_FORMATS, FramingError, SyslogLine, detect_file_format, parse_framing_error,
                      parse_syslog_line, split_tag, strip_time)

__all__ = [
    "DIALECTS", "DECODE_MIN", "Unescaped", "escape", "unescape", "unescape_as", "to_bytes",
    "Rebuilt", "rebuild", "SHAPES", "SOURCE_FIELDS", "PAYLOAD_FIELDS", "READ_FIELDS",
    "Senders", "senders", "sender_fields", "answers_alike", "rebuild_with", "fields_read", "str_keys",
    "memo_key", "ABSENT", "SENDER", "sender_hostname", "RecordPlan", "plan_for", "planned_key", "planned_senders",
    "FORMATS", "SYSLOG_NG_FORMATS", "SyslogLine", "parse_syslog_line", "detect_file_format", "split_tag", "strip_time",
    "FramingError", "parse_framing_error",
]
