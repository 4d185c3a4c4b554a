"""The endpoint's own Prometheus metrics, recorded by the ingress through Ray Serve's metrics API
(``ray.serve.metrics``: Ray's application metrics with the deployment, replica and application tags added).

Ray exports them with every other metric of the node on its metrics-export port (``ray start
--metrics-export-port``, ``ray.init(_metrics_export_port=...)``; Prometheus text at ``/metrics``), each name
prefixed ``ray_``. Listed with Serve's built-in ones in ``docs/cluster.md`` ("Metrics"):

- ``ray_sbir_requests_total{endpoint, status}``: HTTP requests by endpoint (``search``, ``info``, ``item_image``)
  and status code, errors included;
- ``ray_sbir_stage_seconds{stage}``: per-stage latency histogram of ``/search`` (``validate``, ``retrieve``
  (the encoder + first search), ``rescore``, ``query_expansion``, ``rerank``, ``results``, ``total``);
- ``ray_sbir_results_returned``: histogram of the results a search returned;
- ``ray_sbir_index_rows{index, version}``: rows of the served gallery index, ``version`` being
  ``v<version number>-<first 8 characters of its manifest's fingerprint>`` (``ray_sbir.index.versions``).
"""

from __future__ import annotations

STAGE_BOUNDARIES_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
RESULT_BOUNDARIES = [1, 5, 10, 20, 50, 100, 200, 500, 1000]

__all__ = ["EndpointMetrics"]


class EndpointMetrics:
    """The ingress replica's metrics objects (created once per replica, in its constructor)."""

    def __init__(self, index: str, version: str | None, rows: int):
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "sbir_requests", description="HTTP requests of the ray-sbir endpoint, by endpoint and status code",
            tag_keys=("endpoint", "status"))
        self.stage_seconds = metrics.Histogram(
            "sbir_stage_seconds", description="Latency of each stage of a /search request, in seconds",
            boundaries=STAGE_BOUNDARIES_S, tag_keys=("stage",))
        self.results = metrics.Histogram(
            "sbir_results_returned", description="Results returned by a /search request",
            boundaries=RESULT_BOUNDARIES)
        self.index_rows = metrics.Gauge(
            "sbir_index_rows", description="Rows of the served gallery index (version: its manifest fingerprint)",
            tag_keys=("index", "version"))
        self.rows, self.row_tags = rows, {"index": index, "version": version or "unknown"}
        self.index_rows.set(rows, tags=self.row_tags)

    def request(self, endpoint: str, status: int) -> None:
        self.requests.inc(1, tags={"endpoint": endpoint, "status": str(status)})
        # Set again with every request: a gauge set only in the constructor was at times never exported
        # (a replica created before its metrics recorder was ready); a set costs a dict update.
        self.index_rows.set(self.rows, tags=self.row_tags)

    def search(self, timing_s: dict[str, float], results: int) -> None:
        for stage, seconds in timing_s.items():
            self.stage_seconds.observe(seconds, tags={"stage": stage})
        self.results.observe(results)
