"""tilepass-server (encoder/server/) in a child process, talked to with the official ``openai`` client and httpx:
plain and streamed completions equal tilepass-cli's output for the same image and settings (defaults, sampling
with a seed, the no-repeat rule's extra fields, raw, a prompt, several images, a file:// image); every bad
request gets its status and an OpenAI-style error body and the server goes on; a full queue answers 503 with
Retry-After; a client that goes away frees its slot. Model: the llama.cpp-written tiny DeepSeek-OCR v1 of
../shared/fixtures (random weights: each image gives its own token sequence)."""

from __future__ import annotations

import concurrent.futures as cf
import json
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder.cli import main as cli_main  # noqa: E402
from server_harness import TEXT, VISION, Server, data_url, noise_page, png_bytes, user_message  # noqa: E402

KEY = "test-key-123"
N_DEFAULT = 24  # the server's -n


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("server-pages")
    allowed = d / "allowed"
    allowed.mkdir()
    pages = []
    for i in range(3):
        p = allowed / f"page{i}.png"
        p.write_bytes(png_bytes(noise_page(100 + i)))
        pages.append(p)
    outside = d / "outside.png"
    outside.write_bytes(png_bytes(noise_page(7)))
    return {"dir": allowed, "pages": pages, "outside": outside, "tmp": d}


@pytest.fixture(scope="module")
def server(files):
    with Server("-t", "1", "--mode", "tiny", "-n", N_DEFAULT, "--parallel", "2", "--queue-size", "2",
                "--api-key", KEY, "--max-body-mb", "1", "--max-image-pixels", "200000",
                "--allow-files", files["dir"]) as s:
        yield s
        rc, err = s.terminate()
        assert rc == 0 and "Traceback" not in err, err


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=60)


def cli_text(capsys, image: Path, *extra: object) -> str:
    """tilepass-cli's stdout for one image with the server's model settings (tiny mode, -n 24) and extra."""
    capsys.readouterr()
    rc = cli_main([str(a) for a in ("-m", TEXT, "--mmproj", VISION, "-t", "1", "--mode", "tiny", "-n", N_DEFAULT,
                                    "-q", "--image", image, *extra)])
    out, err = capsys.readouterr()
    assert rc in (0, 3), err  # 3: stopped at -n, as these random weights do
    return out


def ask(client, image: Path, stream: bool = False, text: str | None = None, **kw):
    return client.chat.completions.create(model="tiny", messages=user_message(data_url(image), text=text),
                                          stream=stream, **kw)


def streamed(client, image: Path, text: str | None = None, **kw) -> tuple[str, list]:
    chunks = list(ask(client, image, True, text, **kw))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


# ---- the same output as tilepass-cli ------------------------------------------------------------------------
CASES = {
    "defaults": ({}, []),  # greedy, the family's no-repeat rule (30 in 90 for DeepSeek-OCR)
    "sampled": ({"max_tokens": 16, "temperature": 0.9, "top_p": 0.9, "seed": 5},
                ["-n", 16, "--temp", 0.9, "--top-p", 0.9, "--seed", 5]),
    "no_repeat": ({"extra_body": {"no_repeat_ngram_size": 1, "no_repeat_window": 0}},
                  ["--no-repeat-ngram", 1, "--no-repeat-window", 0]),
    "no_repeat_off": ({"extra_body": {"no_repeat_ngram_size": 0, "top_k": 3}, "temperature": 1.5, "seed": 11},
                      ["--no-repeat-ngram", 0, "--top-k", 3, "--temp", 1.5, "--seed", 11]),
    "raw": ({"extra_body": {"raw": True}}, ["--raw"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plain_and_stream_equal_cli(case, server, client, files, capsys):
    kw, cli_args = CASES[case]
    page = files["pages"][0]
    want = cli_text(capsys, page, *cli_args)
    assert want.strip()
    plain = ask(client, page, **kw)
    assert plain.choices[0].message.content == want
    assert plain.choices[0].finish_reason == "length"  # the random weights never say end of text
    text, chunks = streamed(client, page, **kw)
    assert text == want
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_prompt_json_and_usage_equal_cli(server, client, files, capsys):
    page = files["pages"][1]
    want = cli_text(capsys, page, "-p", "Free OCR.")
    got = ask(client, page, text="Free OCR.")
    assert got.choices[0].message.content == want
    assert streamed(client, page, text="Free OCR.")[0] == want
    # the grounding field and the counts against the CLI's --json page
    ref = json.loads(cli_text(capsys, page, "--json"))
    resp = ask(client, page)
    (pg,) = resp.model_extra["pages"]  # the extra field, as the openai client keeps it
    got = resp.model_dump()
    assert pg["regions"] == ref["regions"] and (pg["width"], pg["height"]) == (ref["width"], ref["height"])
    assert pg["tokens"] == ref["tokens"]
    u = got["usage"]
    assert (u["prompt_tokens"], u["completion_tokens"], u["total_tokens"]) == (
        ref["tokens"]["prompt"], ref["tokens"]["generated"], ref["tokens"]["prompt"] + ref["tokens"]["generated"])
    # stream_options.include_usage: a last chunk with the usage
    chunks = list(ask(client, page, True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == ref["tokens"]["generated"]


def test_several_images_and_file_urls(server, client, files, capsys):
    a, b = files["pages"][0], files["pages"][2]
    want_a, want_b = cli_text(capsys, a), cli_text(capsys, b)
    assert want_a != want_b
    msg = user_message(data_url(a), data_url(b))
    got = client.chat.completions.create(model="tiny", messages=msg)
    assert got.choices[0].message.content == want_a + "\n\n" + want_b
    assert len(got.model_dump()["pages"]) == 2
    # more images than --images-per-pass (4): encoded in two passes, the answer the same
    got = client.chat.completions.create(model="tiny", messages=user_message(*[data_url(p) for p in (a, b, a, b, a)]))
    assert got.choices[0].message.content == "\n\n".join([want_a, want_b, want_a, want_b, want_a])
    # file:// under --allow-files: the same page
    got = client.chat.completions.create(model="tiny", messages=user_message(b.resolve().as_uri()))
    assert got.choices[0].message.content == want_b


def test_models_health_metrics(server, client):
    assert [m.id for m in client.models.list().data] == [TEXT.name.removesuffix(".gguf")]
    h = httpx.get(server.base + "/health").json()
    assert h["status"] == "ok" and h["slots"] == 2
    m = httpx.get(server.base + "/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    for name in ("tilepass_requests_total", "tilepass_pages_total", "tilepass_completion_tokens_total",
                 "tilepass_queue_length", "tilepass_request_seconds_bucket", "tilepass_first_token_seconds_count"):
        assert name in m.text


# ---- bad requests ---------------------------------------------------------------------------------------------
def post(server, body, key: str | None = KEY, raw: bytes | None = None, **headers):
    h = {"content-type": "application/json", **headers}
    if key is not None:
        h["authorization"] = f"Bearer {key}"
    content = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(server.url + "/chat/completions", content=content, headers=h, timeout=60)


def good_body(**extra):
    return {"model": "tiny", "messages": user_message(data_url(PAGE_SMALL())), **extra}


def PAGE_SMALL():  # noqa: N802 - a fresh small image
    return noise_page(3)


def bad_cases(files) -> list[tuple[str, dict | None, bytes | None, dict, int, str]]:
    """(name, body, raw bytes, headers, status, error code)."""
    img = data_url(noise_page(3))
    big = data_url(Image.new("RGB", (600, 600), (200, 30, 30)))  # 360,000 pixels > --max-image-pixels 200000
    return [
        ("bad json", None, b'{"messages": [', {}, 400, "invalid_json"),
        ("not utf-8", None, b"\xff\xfe{", {}, 400, "invalid_json"),
        ("not an object", None, b"[1, 2]", {}, 400, "invalid_type"),
        ("no messages", {"model": "x"}, None, {}, 400, "missing_required_parameter"),
        ("messages a string", {"messages": "hello"}, None, {}, 400, "invalid_type"),
        ("message not an object", {"messages": [3]}, None, {}, 400, "invalid_type"),
        ("no user message", {"messages": [{"role": "system", "content": "x"}]}, None, {}, 400,
         "missing_required_parameter"),
        ("a conversation", {"messages": [*user_message(img), {"role": "assistant", "content": "x"}]}, None, {}, 400,
         "unsupported_value"),
        ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, None, {}, 400, "invalid_value"),
        ("max_tokens a string", good_body(max_tokens="ten"), None, {}, 400, "invalid_type"),
        ("max_tokens 0", good_body(max_tokens=0), None, {}, 400, "invalid_value"),
        ("max_tokens a bool", good_body(max_tokens=True), None, {}, 400, "invalid_type"),
        ("temperature negative", good_body(temperature=-1), None, {}, 400, "invalid_value"),
        ("top_p 0", good_body(top_p=0), None, {}, 400, "invalid_value"),
        ("seed a float", good_body(seed=1.5), None, {}, 400, "invalid_type"),
        ("n 2", good_body(n=2), None, {}, 400, "invalid_value"),
        ("stream a string", good_body(stream="yes"), None, {}, 400, "invalid_type"),
        ("no_repeat_ngram_size negative", good_body(no_repeat_ngram_size=-2), None, {}, 400, "invalid_value"),
        ("no_repeat_scope unknown", good_body(no_repeat_scope="some"), None, {}, 400, "invalid_value"),
        ("mode unknown", good_body(mode="huge"), None, {}, 400, "invalid_value"),
        ("raw a number", good_body(raw=1), None, {}, 400, "invalid_type"),
        ("content a number", {"messages": [{"role": "user", "content": 5}]}, None, {}, 400, "invalid_type"),
        ("text only: no image", {"messages": [{"role": "user", "content": "OCR this"}]}, None, {}, 400,
         "missing_image"),
        ("parts without image", {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, None, {},
         400, "missing_image"),
        ("unknown part type", {"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, None, {}, 400,
         "invalid_value"),
        ("image_url not a string", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url":
                                                                                {"url": 5}}]}]}, None, {}, 400,
         "invalid_type"),
        ("not base64", {"messages": user_message("data:image/png;base64,@@@not base64@@@")}, None, {}, 400,
         "invalid_image_url"),
        ("data URI without base64", {"messages": user_message("data:image/png,abc")}, None, {}, 400,
         "invalid_image_url"),
        ("undecodable image", {"messages": user_message("data:image/png;base64,bm90IGFuIGltYWdl")}, None, {}, 400,
         "invalid_image"),
        ("empty image", {"messages": user_message("data:image/png;base64,")}, None, {}, 400, "invalid_image"),
        ("too many pixels", {"messages": user_message(big)}, None, {}, 400, "image_too_large"),
        ("remote URL", {"messages": user_message("https://example.com/page.png")}, None, {}, 400,
         "invalid_image_url"),
        ("file outside --allow-files", {"messages": user_message(files["outside"].resolve().as_uri())}, None, {}, 400,
         "invalid_image_url"),
        ("file escaping --allow-files", {"messages": user_message("file://" + str(files["dir"]) + "/../outside.png")},
         None, {}, 400, "invalid_image_url"),
        ("two <image> in the prompt", {"messages": user_message(img, text="<image> and <image>")}, None, {}, 400,
         "invalid_prompt"),
        ("body too large", None, json.dumps({"messages": user_message(img, text="x" * 1_200_000)}).encode(), {},
         413, "body_too_large"),
    ]


def test_bad_requests(server, files):
    for name, body, raw, headers, status, code in bad_cases(files):
        r = post(server, body, raw=raw, **headers)
        assert r.status_code == status, (name, r.status_code, r.text[:300])
        err = r.json()["error"]
        assert err["code"] == code and err["type"] == "invalid_request_error", (name, err)
        assert isinstance(err["message"], str) and err["message"], name
    # the API key
    for key in (None, "wrong"):
        r = post(server, good_body(), key=key)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.get(server.url + "/models")
    assert r.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()
    # routes and methods
    r = httpx.get(server.base + "/v2/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(server.url + "/chat/completions", headers={"authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and "error" in r.json()
    # the openai client sees the error's code and message
    with pytest.raises(openai.BadRequestError) as e:
        openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0).chat.completions.create(
            model="tiny", messages=user_message("data:image/png;base64,bm90IGFuIGltYWdl"))
    assert e.value.code == "invalid_image" and "cannot read image" in e.value.message
    # still serving
    assert httpx.get(server.base + "/health").json()["status"] == "ok"
    assert post(server, good_body(max_tokens=4)).status_code == 200


# ---- queue, disconnects -----------------------------------------------------------------------------------------
def busy(server) -> int:
    return httpx.get(server.base + "/health").json()["slots_busy"]


def wait_idle(server, within: float) -> float:
    t0 = time.monotonic()
    while busy(server) or httpx.get(server.base + "/health").json()["queue_length"]:
        assert time.monotonic() - t0 < within, "the slots did not come free"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_full_queue_is_503_with_retry_after(server):
    wait_idle(server, 30)
    body = good_body(max_tokens=500)  # ~2.5 s each on one thread; 2 slots + 2 queued, then 503
    with cf.ThreadPoolExecutor(8) as ex:
        rs = list(ex.map(lambda _: post(server, body), range(8)))
    codes = sorted(r.status_code for r in rs)
    assert codes.count(503) >= 2 and codes.count(200) >= 4 and set(codes) == {200, 503}, codes
    for r in rs:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "queue_full"
        else:
            assert r.json()["usage"]["completion_tokens"] == 500
    assert 'status="503"' in httpx.get(server.base + "/metrics").text


def test_disconnect_frees_the_slot(server):
    wait_idle(server, 30)
    body = good_body(max_tokens=20000, stream=True)  # far longer than this test
    h = {"authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", server.url + "/chat/completions", json=body, headers=h) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
            assert busy(server) == 1
    assert wait_idle(server, 5) < 5
    # a plain request whose client gives up
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/chat/completions", json=good_body(max_tokens=20000), headers=h, timeout=1.0)
    assert wait_idle(server, 5) < 5
    assert 'status="499"' in httpx.get(server.base + "/metrics").text
    # and the server still answers
    assert post(server, good_body(max_tokens=4)).status_code == 200


def test_a_client_that_goes_away_cancels_its_vision_pass():
    """A client that gives up while its gundam page is in the vision pass: the pass is stopped (through the
    library's abort poll), no page is counted, and the slot is free again. The test hook holds each pass until its
    jobs are cancelled (or 30 s), so the disconnect lands inside the pass whatever the encoder's speed."""
    with Server("-t", "1", "--mode", "tiny", env={"TILEPASS_TEST_HOLD_VISION_S": "30"}) as s:
        big = Image.new("RGB", (2400, 3400), (250, 250, 250))
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(s.url + "/chat/completions", json={"messages": user_message(data_url(big)), "mode": "gundam",
                                                          "max_tokens": 4}, timeout=0.5)
        assert wait_idle(s, 20) < 20
        m = httpx.get(s.base + "/metrics").text
        assert "tilepass_vision_passes_total 0" in m and "tilepass_pages_total 0" in m
        rc, err = s.terminate(timeout=30)
        assert rc == 0 and "Traceback" not in err, err


def test_sigterm_cancels_what_does_not_finish_in_time():
    """--shutdown-timeout 1: requests far longer than that (a stream running, a plain request queued) are cancelled
    with an error event / a 503 saying so, and the server exits 0 within seconds."""
    import threading

    with Server("-t", "1", "--mode", "tiny", "--shutdown-timeout", "1") as s:
        out: dict = {}
        h = {"authorization": f"Bearer {KEY}"}

        def plain() -> None:
            out["plain"] = httpx.post(s.url + "/chat/completions", json=good_body(max_tokens=50000), timeout=60)

        def stream() -> None:
            with httpx.stream("POST", s.url + "/chat/completions", json=good_body(max_tokens=50000, stream=True),
                              headers=h, timeout=60) as r:
                out["stream"] = (r.status_code, [line for line in r.iter_lines() if line])

        threads = [threading.Thread(target=stream), threading.Thread(target=plain)]  # the stream runs, plain waits
        for t in threads:
            t.start()
            time.sleep(0.3)
        while busy(s) == 0 or httpx.get(s.base + "/health").json()["queue_length"] == 0:
            time.sleep(0.05)
        t0 = time.monotonic()
        rc, err = s.terminate(timeout=30)
        stopped = time.monotonic() - t0
        for t in threads:
            t.join(30)
        assert rc == 0 and "Traceback" not in err, err
        assert stopped < 6, stopped
        r = out["plain"]
        assert r.status_code == 503 and r.json()["error"]["code"] == "cancelled"
        assert "shutting down" in r.json()["error"]["message"]
        status, lines = out["stream"]
        assert status == 200 and lines[-1] == "data: [DONE]"
        assert json.loads(lines[-2][6:])["error"]["code"] == "cancelled"
