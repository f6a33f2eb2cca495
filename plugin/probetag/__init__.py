"""probetag: tags port-scanner service probes in log streams.

Records enter through ``probetag.inputs`` (forward protocol, Vector HTTP and
NDJSON, exec-filter stdin), are decoded by ``probetag.decode``, matched and
correlated by ``probetag.detect``, acted on by ``probetag.act`` and leave
through ``probetag.outputs``. The protocol, decoding and matching code does no
I/O; asyncio lives only in the inputs/outputs servers and clients.
"""

from ._config import Config, ConfigError, load_config
from ._metrics import Metrics

__all__ = ["Config", "ConfigError", "load_config", "Metrics", "__version__"]

__version__ = "0.1.0"
