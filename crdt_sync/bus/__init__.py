"""Telling nodes of each other's commits: a hint, never the truth (docs/ARCHITECTURE.md)."""

from .base import CommitBus, NewsFollower, is_bus_url, open_bus

__all__ = ["CommitBus", "NewsFollower", "is_bus_url", "open_bus"]
