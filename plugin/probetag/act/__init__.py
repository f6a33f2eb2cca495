"""act: what happens to a record once a probe is recognised in it.

``Actions.decide(tag, record, probe, source) -> Decision`` applies the
allowlist, the ordered rules (keep / drop / retag) and the optional ECS
fields; ``Actions.summary(summary)`` builds scan-summary records. No I/O.
"""

from ._actions import Actions, Decision
from ._ecs import ECS_VERSION

__all__ = ["Actions", "Decision", "ECS_VERSION"]
