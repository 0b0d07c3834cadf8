"""`voxpop bench`: throughput, latency and memory of the stream, measured as ratios in one run."""
