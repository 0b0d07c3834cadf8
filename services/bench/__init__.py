"""`voxpop bench`: throughput, latency and memory of the stream, measured as ratios in one run."""

#: The bench's phases in run order, and what each needs from earlier ones (`voxpop bench --only`).
PHASES = ("encoders", "accuracy", "saturation", "compiled", "latency", "naive", "profile")
NEEDS = {
    "saturation": ("encoders", "accuracy"),
    "compiled": ("saturation",),
    "latency": ("saturation",),
    "naive": ("saturation",),
    "profile": ("saturation",),
}
