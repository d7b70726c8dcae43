"""The Nexmark benchmark's event streams (persons, auctions, bids) as a replayable source.

``model`` holds the event model (documented there), ``vocab`` its fixed string
vocabularies, ``source`` the ``NexmarkSource`` connector (options documented there).
"""

from connectors.nexmark.model import SCHEMAS, generate_events
from connectors.nexmark.source import NexmarkSource

__all__ = ["SCHEMAS", "NexmarkSource", "generate_events"]
