"""The metric families: lock-free counters and histograms, rendered by prometheus_client in either format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from parley.telemetry.metrics import Histogram, Metrics


def test_histogram_buckets_are_cumulative_with_inf_and_sum() -> None:
    histogram = Histogram("h", "help", ("model",), (0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(("m",), value)
    buckets, total = histogram.cumulative(("m",))
    assert buckets == [("0.1", 2.0), ("1", 3.0), ("+Inf", 4.0)]  # le is inclusive: 0.1 falls in le="0.1"
    assert total == 3.65


def test_render_is_the_text_format_prometheus_parses() -> None:
    metrics = Metrics()
    metrics.http_requests.inc(("POST", "/v1/responses", "200"), 2)
    metrics.tokens.inc(("echo", "input"), 7)
    metrics.response_duration.observe(("echo",), 0.2)
    metrics.background_running.values[()] = 3
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain; version=0.0.4")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode()) for s in family.samples}
    assert samples[("parley_http_requests_total", (("method", "POST"), ("route", "/v1/responses"),
                                                    ("status", "200")))] == 2
    assert samples[("parley_tokens_total", (("model", "echo"), ("type", "input")))] == 7
    assert samples[("parley_response_duration_seconds_count", (("model", "echo"),))] == 1
    assert samples[("parley_response_duration_seconds_bucket", (("le", "0.25"), ("model", "echo")))] == 1
    assert samples[("parley_background_running", ())] == 3
    assert ("process_cpu_seconds_total", ()) in samples  # prometheus_client's process collector


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    body, content_type = Metrics().render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.responses.inc(('we"ird\nmodel', "completed", "foreground"))
    body, _ = metrics.render(None)
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["parley_responses"].samples[0].labels["model"] == 'we"ird\nmodel'
