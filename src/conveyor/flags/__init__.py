"""Feature flags: evaluation by the Unleash client specification, pure functions.

`evaluate` answers "is this flag on, and which variant, for this context?" from a
`protocol.unleash.ClientFeatures` document, exactly as the official Unleash SDKs do, so
conveyor's evaluator, its routers and any SDK agree for one user. Host-side code imports
this package: it needs no database and no FastAPI.
"""

from .context import Context
from .evaluate import FlagSet, VariantResult

__all__ = ["Context", "FlagSet", "VariantResult"]
