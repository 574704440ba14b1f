"""Prometheus metrics, correct with several worker processes.

With `serve --workers N` the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh directory before
the workers start; each worker writes its counters there and /metrics sums them. Outbox depth
and age are read from the database at scrape time, so every worker reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

OTPS_ISSUED = Counter("roamsign_otps_issued_total", "OTPs issued", ["channel"])
SIGNATURES = Counter("roamsign_signatures_total", "Signatures made", ["signature_format"])
FAILURES = Counter("roamsign_failures_total", "Refused requests, by problem code", ["code"])
REQUEST_LATENCY = Histogram(
    "roamsign_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MAILS_DELIVERED = Counter("roamsign_mails_delivered_total", "E-mails accepted by SMTP", ["purpose"])
DEVICE_REGISTRATIONS = Counter(
    "roamsign_device_registrations_total", "MyGPKI Mobile registrations, by outcome", ["outcome"]
)
DEVICE_ACTIVATIONS = Counter(
    "roamsign_device_activations_total",
    "MyGPKI Mobile activation attempts, by outcome",
    ["outcome"],
)
DEVICE_MESSAGE_DELAY = Histogram(
    "roamsign_device_message_delay_seconds",
    "From an OTP's issue to its fetch by the device",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)


# What the outbox gauges read at scrape time: (messages waiting, age of the oldest in seconds).
OutboxReading = Callable[[], tuple[int, float]]


class OutboxCollector(Collector):
    def __init__(self, read_outbox: OutboxReading) -> None:
        self.read_outbox = read_outbox

    def collect(self) -> Iterator[Metric]:
        depth, oldest_age = self.read_outbox()
        yield GaugeMetricFamily("roamsign_outbox_depth", "E-mails waiting to be delivered", depth)
        yield GaugeMetricFamily(
            "roamsign_outbox_oldest_age_seconds", "Age of the oldest undelivered e-mail", oldest_age
        )


def render_metrics(read_outbox: OutboxReading) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in (
            OTPS_ISSUED,
            SIGNATURES,
            FAILURES,
            REQUEST_LATENCY,
            MAILS_DELIVERED,
            DEVICE_REGISTRATIONS,
            DEVICE_ACTIVATIONS,
            DEVICE_MESSAGE_DELAY,
        ):
            registry.register(collector)
    registry.register(OutboxCollector(read_outbox))
    return generate_latest(registry), CONTENT_TYPE_LATEST
