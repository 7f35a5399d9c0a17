"""The local stack's tools, beside the product and never in its image: the one webhook receiver
(`receiver`) of the demo, the tests and the benchmarks, and the demo's topic set-up (`topics`)."""
