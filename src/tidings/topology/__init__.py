"""The topology of an App: the advisor (``tidings check``), its AsyncAPI document and its map.

``check(app)`` reviews an App's commands and events against the heuristics of
``docs/command-or-event.md``; ``allow`` marks code for it.
"""

from tidings.topology.check import Report, check, load_config
from tidings.topology.marks import allow
from tidings.topology.model import Handler, MessageType, Place, Topology, Usage, build
from tidings.topology.rules import RULES, Finding, Rule

__all__ = [
    "RULES",
    "Finding",
    "Handler",
    "MessageType",
    "Place",
    "Report",
    "Rule",
    "Topology",
    "Usage",
    "allow",
    "build",
    "check",
    "load_config",
]
