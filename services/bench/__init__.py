"""`voxpop bench`: throughput, latency and memory of the stream, measured as ratios in one run."""

#: The bench's phases in run order, and what each needs from earlier ones (`voxpop bench --only`).
PHASES = ("encoders", "accuracy", "saturation", "compiled", "latency", "cotenancy", "naive", "profile", "memory")
NEEDS = {
    "saturation": ("encoders", "accuracy"),
    "compiled": ("saturation",),
    "latency": ("saturation",),
    "cotenancy": ("saturation",),
    "naive": ("saturation",),
    "profile": ("saturation",),
}
#: `voxpop bench scale`'s phases (services/bench/scale.py), saved under the report's `scale`.
SCALE_PHASES = ("ingest", "trends", "api")
