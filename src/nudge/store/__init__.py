"""The store: SQLAlchemy models, engines and migrations."""

# Registers the insight, campaign and send tables on Base.metadata wherever the store
# is imported.
from nudge.store import campaign_models as campaign_models
from nudge.store import feedback_models as feedback_models
from nudge.store import insight_models as insight_models
from nudge.store import send_models as send_models
