"""The topology of an App: the advisor (``tidings check``), its AsyncAPI document and its map.

``check(app)`` reviews an App's commands and events against the heuristics of
``docs/command-or-event.md``; ``allow`` and ``critical`` mark code for it.
"""

from tidings.topology.check import Report, check, load_config
from tidings.topology.marks import allow, critical
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
    "critical",
    "load_config",
]
