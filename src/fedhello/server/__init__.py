"""Server logic shared by every engine."""

from fedhello.server.coordinator import Coordinator, build_allocator
from fedhello.server.federation import Federation, assign_tiers, build_federation

__all__ = ["Coordinator", "Federation", "assign_tiers", "build_allocator", "build_federation"]
