"""Pull and merge requests: their webhook events, and commit statuses posted back to forges."""
