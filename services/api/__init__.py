"""The HTTP API and dashboard (`voxpop api`): REST, server-sent events, OpenAPI, metrics."""
