"""The store: SQLAlchemy models, engines and migrations."""

# Registers the insight tables on Base.metadata wherever the store is imported.
from nudge.store import insight_models as insight_models
