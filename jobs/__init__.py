"""Entry points of scheduled work: the nightly pipeline (and, later, the online updater and sinks)."""
