"""tilepass-server's batched decode (issue 25): with --parallel 4, concurrent requests are decoded in shared steps (one
tp_text_eval_batch for every running page: /metrics counts steps of more than one page and the most pages in one
step), and every response still equals tilepass-cli's output for its own image and settings (greedy and seeded
sampling side by side, plain and streamed); a client that goes away mid-batch leaves the batch, the others' outputs
are unchanged and the slots come free. Model: the llama.cpp-written tiny DeepSeek-OCR v1 of ../shared/fixtures
(random weights: each image gives its own token sequence)."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder.cli import main as cli_main  # noqa: E402
from server_harness import TEXT, VISION, Server, data_url, noise_page, png_bytes, user_message  # noqa: E402

N_DEFAULT = 40  # the server's -n
PARALLEL = 4
# (image seed, request settings, the same settings for tilepass-cli): greedy and sampled requests in one batch
CASES = [
    (201, {}, []),
    (202, {"temperature": 0.9, "top_p": 0.9, "seed": 5}, ["--temp", 0.9, "--top-p", 0.9, "--seed", 5]),
    (203, {"extra_body": {"no_repeat_ngram_size": 1, "no_repeat_window": 0}},
     ["--no-repeat-ngram", 1, "--no-repeat-window", 0]),
    (204, {"max_tokens": 25, "temperature": 1.5, "seed": 11, "extra_body": {"top_k": 3}},
     ["-n", 25, "--temp", 1.5, "--seed", 11, "--top-k", 3]),
]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("batch-pages")
    out = []
    for seed, _, _ in CASES:
        p = d / f"page{seed}.png"
        p.write_bytes(png_bytes(noise_page(seed)))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def wants(pages) -> list[str]:
    """tilepass-cli's stdout for each case's image and settings (one run each)."""
    out = []
    for (_, _, extra), page in zip(CASES, pages):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = cli_main([str(a) for a in ("-m", TEXT, "--mmproj", VISION, "-t", "1", "--mode", "tiny", "-n",
                                            N_DEFAULT, "-q", "--image", page, *extra)])
        assert rc in (0, 3)  # 3: stopped at -n, as these random weights do
        out.append(buf.getvalue())
        assert out[-1].strip()
    return out


@pytest.fixture(scope="module")
def server():
    with Server("-t", "1", "--mode", "tiny", "-n", N_DEFAULT, "--parallel", PARALLEL, "--queue-size", "8") as s:
        yield s
        rc, err = s.terminate()
        assert rc == 0 and "Traceback" not in err, err


def metrics(server) -> dict[str, float]:
    out = {}
    for line in httpx.get(server.base + "/metrics").text.splitlines():
        if line.startswith("tilepass_") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
    return out


def ask(server, page: Path, kw: dict, stream: bool) -> str:
    c = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)
    r = c.chat.completions.create(model="tiny", messages=user_message(data_url(page)), stream=stream, **kw)
    if not stream:
        return r.choices[0].message.content
    return "".join(ch.choices[0].delta.content or "" for ch in r if ch.choices)


def wait_idle(server, within: float) -> None:
    t0 = time.monotonic()
    while True:
        h = httpx.get(server.base + "/health").json()
        if not h["slots_busy"] and not h["queue_length"]:
            return
        assert time.monotonic() - t0 < within, "the slots did not come free"
        time.sleep(0.05)


def test_concurrent_requests_share_steps_and_equal_cli(server, pages, wants):
    before = metrics(server)
    assert before["tilepass_decode_batched_steps_total"] == 0 and before["tilepass_slots"] == PARALLEL
    for rnd in range(2):  # plain, then streamed
        with cf.ThreadPoolExecutor(len(CASES)) as ex:
            got = list(ex.map(lambda i: ask(server, pages[i], CASES[i][1], rnd == 1), range(len(CASES))))
        for i, (g, w) in enumerate(zip(got, wants)):
            assert g == w, f"case {i} (round {rnd})"
    m = metrics(server)
    assert m["tilepass_pages_total"] == 2 * len(CASES)
    assert m["tilepass_decode_batched_steps_total"] > 0
    assert 1 < m["tilepass_decode_batch_rows_max"] <= PARALLEL
    # every generated token but each page's first (picked after its prefill) is one row of a step
    assert m["tilepass_decode_rows_total"] == m["tilepass_completion_tokens_total"] - m["tilepass_pages_total"]
    assert m["tilepass_decode_rows_total"] > m["tilepass_decode_steps_total"]  # fewer steps than tokens: shared
    assert m["tilepass_decode_batch_rows"] == 0


def test_a_client_leaving_the_batch_does_not_disturb_the_others(server, pages, wants):
    wait_idle(server, 30)
    h = {"content-type": "application/json"}

    def leaver() -> int:
        body = {"messages": user_message(data_url(pages[0])), "max_tokens": 20000, "stream": True}
        with httpx.Client(timeout=60) as c, c.stream("POST", server.url + "/chat/completions", json=body,
                                                     headers=h) as r:
            lines = r.iter_lines()
            n = sum(1 for _ in zip(range(8), lines))
            time.sleep(0.3)  # the others are decoding beside it
        return n

    with cf.ThreadPoolExecutor(len(CASES)) as ex:
        gone = ex.submit(leaver)
        time.sleep(0.2)
        rest = [ex.submit(ask, server, pages[i], CASES[i][1], i % 2 == 1) for i in range(1, len(CASES))]
        assert gone.result() == 8
        for i, f in enumerate(rest, start=1):
            assert f.result() == wants[i], f"case {i}"
    wait_idle(server, 5)
    m = metrics(server)
    assert m["tilepass_decode_batch_rows"] == 0
    assert ask(server, pages[0], CASES[0][1], False) == wants[0]  # the freed slot's sequence serves again
