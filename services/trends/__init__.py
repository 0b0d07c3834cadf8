"""`voxpop trends`: runs the Faust trend-window app (pipelines.trends) against the real servers."""
