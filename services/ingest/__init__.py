"""Ingest: connectors (replay, HTTP push, live platform clients) -> validate -> dedup -> `posts.raw`."""
