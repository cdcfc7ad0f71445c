"""Pure: which groups and topics of a cluster are watched (exact names, regexes, exclusions).

A pattern must match the whole name, as Java's Pattern.matches (what Kafka's tools do with a
regex): `mirror` is the group `mirror` only, `mirror-.*` every group starting with `mirror-`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class GroupSelection:
    names: tuple[str, ...] = ()
    """Always sampled, even while they do not exist (that is reported)."""
    patterns: tuple[re.Pattern[str], ...] = ()
    """Groups found by discovery (list_consumer_groups) whose id matches one of these."""
    exclude: tuple[re.Pattern[str], ...] = ()
    """Applied to discovered groups only: an exact name is never excluded."""

    @property
    def needs_discovery(self) -> bool:
        return bool(self.patterns)

    def select(self, discovered: Iterable[str] = ()) -> list[str]:
        found = {
            group for group in discovered
            if any(p.fullmatch(group) for p in self.patterns)
            and not any(p.fullmatch(group) for p in self.exclude)
        }
        return list(self.names) + sorted(found - set(self.names))


@dataclass(frozen=True)
class TopicSelection:
    names: tuple[str, ...] = ()
    """Exact topic names: reported with all their partitions, committed or not."""
    patterns: tuple[re.Pattern[str], ...] = ()
    exclude: tuple[re.Pattern[str], ...] = field(default=())

    def allows(self, topic: str) -> bool:
        if any(p.fullmatch(topic) for p in self.exclude):
            return False
        if not self.names and not self.patterns:
            return True
        return topic in self.names or any(p.fullmatch(topic) for p in self.patterns)

FULL_MATCH_NOTE = "patterns match whole names, as Java's Pattern.matches"
