"""`voxpop alerts`: Alertmanager-style grouping, silences and signed webhook delivery."""
