"""Running EdgeSplit without a cluster, for tests, benchmarks and experiments: private Flower
runtimes as processes (`runtime`), an in-process Grid (`inprocess`), tiny run configs
(`configs`) and the bad-input case table (`bad_inputs`). It sits above `fl_app`; only
`experiments/` and `tests/` import it."""
