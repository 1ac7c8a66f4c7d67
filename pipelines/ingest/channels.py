"""Channel-name aliases for ingest: the table lives in `models.channels` (the server matches
`:forecast` channels with it too); re-exported here for ingest's modules."""

from models.channels import ALIASES, canonical_name, match_channels

__all__ = ["ALIASES", "canonical_name", "match_channels"]
