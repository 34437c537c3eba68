"""Online updates from fresh feedback: user embeddings folded into ALS, real-time restaurant state."""

from recsys.online.updater import BatchResult, LogEvent, OnlineUpdateError, OnlineUpdater

__all__ = ["BatchResult", "LogEvent", "OnlineUpdateError", "OnlineUpdater"]
