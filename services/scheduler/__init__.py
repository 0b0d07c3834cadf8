"""`voxpop scheduler`: APScheduler 3 with its job store in PostgreSQL (reports, retention)."""
