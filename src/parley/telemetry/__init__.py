"""Observability of one app: Prometheus metrics, OpenTelemetry traces (the `otel` extra), and the hooks through
which the request path reports to them (telemetry/observe.py). Nothing here is global: each app builds its own."""
