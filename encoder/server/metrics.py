"""The server's counters in Prometheus' text format (version 0.0.4), written by hand: requests by route and status,
pages, tokens, vision passes, decoder steps and their batch sizes, the queue and the busy slots, and histograms of
request latency and of the time to the first token."""

from __future__ import annotations

import threading
from typing import Callable

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1
        self.total += 1
        self.sum += v

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{b:g}"}} {c}' for b, c in zip(self.buckets, self.counts)]
        out += [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]
        return out


class Metrics:
    """What the HTTP layer counts; gauges and the engine's counters are read when /metrics is asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = Histogram()
        self.first_token = Histogram()
        self.rejected_full = 0

    def request(self, route: str, status: int, seconds: float | None = None) -> None:
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            if seconds is not None:
                self.latency.observe(seconds)

    def first_token_after(self, seconds: float) -> None:
        with self._lock:
            self.first_token.observe(seconds)

    def render(self, gauges: dict[str, tuple[str, float]], counters: dict[str, tuple[str, float]]) -> str:
        """The exposition text; gauges / counters: name -> (help, value), read by the caller from the engine."""
        out: list[str] = []

        def head(name: str, kind: str, help_: str) -> None:
            out.extend([f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])

        with self._lock:
            head("tilepass_requests_total", "counter", "HTTP requests answered, by route and status")
            for (route, status), n in sorted(self.requests.items()):
                out.append(f'tilepass_requests_total{{route="{route}",status="{status}"}} {n}')
            for name, (help_, v) in counters.items():
                head(name, "counter", help_)
                out.append(f"{name} {v:g}")
            for name, (help_, v) in gauges.items():
                head(name, "gauge", help_)
                out.append(f"{name} {v:g}")
            head("tilepass_request_seconds", "histogram", "chat completion latency, request received to last byte")
            out += self.latency.lines("tilepass_request_seconds")
            head("tilepass_first_token_seconds", "histogram", "chat completion: request received to first text")
            out += self.first_token.lines("tilepass_first_token_seconds")
        return "\n".join(out) + "\n"


def engine_figures(engine: object) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[str, float]]]:
    """(gauges, counters) of an Engine."""
    st = getattr(engine, "stats")
    get: Callable[[str], float] = lambda n: float(getattr(engine, n))  # noqa: E731
    gauges = {"tilepass_queue_length": ("requests waiting for a slot", get("queue_length")),
              "tilepass_slots_busy": ("slots running a request", get("busy_slots")),
              "tilepass_slots": ("slots (--parallel)", get("n_slots")),
              "tilepass_decode_batch_rows": ("pages in the running decode batch", get("decoding")),
              "tilepass_decode_batch_rows_max": ("the most pages decoded together in one step", st.max_rows)}
    counters = {"tilepass_pages_total": ("pages decoded", st.pages),
                "tilepass_prompt_tokens_total": ("prompt tokens (image tokens included) prefilled", st.prompt_tokens),
                "tilepass_completion_tokens_total": ("tokens generated", st.completion_tokens),
                "tilepass_vision_passes_total": ("vision encoder passes", st.vision_passes),
                "tilepass_vision_images_total": ("images encoded", st.vision_images),
                "tilepass_vision_seconds_total": ("seconds in vision passes", st.vision_seconds),
                "tilepass_decode_steps_total": ("decoder steps (one token of every running page each)", st.decode_steps),
                "tilepass_decode_rows_total": ("tokens evaluated in decoder steps", st.decode_rows),
                "tilepass_decode_batched_steps_total": ("decoder steps of more than one page", st.batched_steps)}
    return gauges, counters
