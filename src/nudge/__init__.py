"""nudge: recommendation e-mails from a shop's own data."""

__version__ = "0.1.0"
