"""Reconciliation: objects changed in a time window, from the REST API, published as webhook-shaped events.

`tradevine-gateway reconcile --lookback 2h` lists the products and sales orders whose `ModifiedDate`
falls in the window and publishes each as a webhook body (`EventType` = the "updated" code) with
routing key `product.reconciled` / `sales_order.reconciled` and `tradevine-source: reconciliation`.
It keeps no state: overlapping windows are safe because consumers are idempotent and stale-guarded.
It runs as its own CronJob, hence a package of its own:

- `client`: the Tradevine REST client (OAuth 1.0a, rate limit, retries)
- `window`: the lookback window, durations, times and UTC offsets (pure)
- `publish`: the webhook-shaped body for a listed object, and publishing it
- `settings`: `ReconcilerSettings.from_environ`
- `run`: paging through the window, the summary and the run's metrics
- `cli`: `tradevine-gateway reconcile` (options, SIGTERM, exit codes)
"""
