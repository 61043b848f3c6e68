"""A synthetic shop that lets ``nudge demo`` run on a fresh clone without servers."""
