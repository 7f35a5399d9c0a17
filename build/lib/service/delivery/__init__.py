"""Delivery, one stage per module: `lane` (a subscription's bounded queue, concurrency and
circuit breaker), `attempt` (the signed POST and what came back), `retry` (what happens after an
attempt), `recorder` (outcomes written in batches), `claimer` (due work from the store, leases),
`housekeeping` (gauges, retention) and `dispatcher`, which takes deliveries in and runs them
through those stages."""
