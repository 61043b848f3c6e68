"""Jobs: the send pipeline as plain functions, and the Celery app around it."""
