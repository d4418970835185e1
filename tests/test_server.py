"""The HTTP server on loopback, driven by the official openai client and plain HTTP."""

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import noise_image
from ui.server import ServerConfig, create_app


def data_url(img, fmt="PNG"):
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


class Running:
    """uvicorn serving the app on 127.0.0.1 with a free port, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def post(url, payload, key=None, raw=None):
    data = raw if raw is not None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(assessor, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    noise_image(40, 60, seed=5).save(allowed / "local.png")
    config = ServerConfig(max_request_bytes=2_000_000, allow_local_dir=allowed, max_batch=8)
    app = create_app(assessor, config)
    with Running(app) as running:
        running.app, running.allowed = app, allowed
        yield running


def test_openai_client_chat_and_stream(server, assessor):
    from openai import OpenAI

    client = OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    img = noise_image(50, 70, seed=1)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "Is the image blurry?"},
        {"type": "image_url", "image_url": {"url": data_url(img)}}]}]
    reply = client.chat.completions.create(model="qsit", messages=messages, max_tokens=6)
    text = reply.choices[0].message.content
    direct = assessor.reply(img, [{"role": "user", "content": "Is the image blurry?"}], max_new_tokens=6)
    assert text == direct.text
    # The random model does not end its turn within 6 tokens: the limit stopped it, and both ways say so.
    assert direct.finish_reason == reply.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="qsit", messages=messages, max_tokens=6, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks[1:-1]]
    assert "".join(pieces) == text and all(p.strip() for p in pieces[:1]) and "" not in pieces
    assert chunks[-1].choices[0].finish_reason == "length"
    assert client.models.list().data[0].id == assessor.model_id


def test_score_matches_the_assessor(server, assessor):
    imgs = [noise_image(40 + 10 * i, 64, seed=i) for i in range(3)]
    code, body = post(f"{server.url}/v1/score", {"images": [data_url(i) for i in imgs]})
    assert code == 200 and body["prompt_version"] == "qsit-1"
    direct = assessor.score(imgs)
    for got, want in zip(body["results"], direct, strict=True):
        assert got["score"] == pytest.approx(want.score, abs=1e-5) and got["level"] == want.level
    code, body = post(f"{server.url}/v1/score", {"image": str(server.allowed / "local.png"), "task": "aesthetics"})
    assert code == 200 and body["results"][0]["task"] == "aesthetics"


def test_concurrent_requests_share_a_forward_pass(server):
    """Requests that arrive while the model is busy are merged into the next pass. Deterministic:
    the model is held until all eight requests are queued, so they take at most two passes."""
    batcher, lock = server.app.state.batcher, server.app.state.model_lock
    before, received = len(batcher.batch_sizes), batcher.received
    payload = {"image": data_url(noise_image(48, 48, seed=9))}
    with ThreadPoolExecutor(8) as pool:
        with lock:
            futures = [pool.submit(post, f"{server.url}/v1/score", payload) for _ in range(8)]
            deadline = time.time() + 60
            while batcher.received < received + 8:
                assert time.time() < deadline, "requests did not arrive"
                time.sleep(0.01)
        codes = [f.result()[0] for f in futures]
    assert codes == [200] * 8
    sizes = batcher.batch_sizes[before:]
    assert sum(sizes) == 8 and len(sizes) <= 2


@pytest.mark.parametrize("payload, status, fragment", [
    ({"messages": [{"role": "user", "content": "hello"}]}, 400, "no image"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]},
     400, "not valid base64"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}]},
     400, "remote image URLs"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}]}]},
     403, "local images must be under"),
    ({"images": ["data:image/png;base64," + base64.b64encode(b"not an image").decode()]}, 400,
     "not a recognised image format"),
    ({"images": []}, 400, "non-empty list"),
    ({"image": "x", "task": "sharpness"}, 400, "unknown task"),
])
def test_bad_requests_get_json_errors(server, payload, status, fragment):
    path = "/v1/chat/completions" if "messages" in payload else "/v1/score"
    code, body = post(f"{server.url}{path}", payload)
    assert code == status and fragment in body["error"]["message"]


def test_oversized_and_malformed_bodies(server):
    import http.client
    from urllib.parse import urlparse

    # Refused from the Content-Length header alone, before the body is read.
    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest("POST", "/v1/score")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", "2100000")
    conn.endheaders()
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["code"] == "request_too_large"
    conn.close()
    # A chunked body (no Content-Length) is measured as it is read.
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    chunks = (b'{"image": "' + b"A" * 500_000 for _ in range(5))
    conn.request("POST", "/v1/score", body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()
    code, body = post(f"{server.url}/v1/score", None, raw=b"{not json")
    assert code == 400 and "not valid JSON" in body["error"]["message"]


def test_api_key_is_required_when_set(assessor):
    app = create_app(assessor, ServerConfig(api_key="s3cret"))
    with Running(app) as running:
        payload = {"image": data_url(noise_image(32, 32))}
        code, body = post(f"{running.url}/v1/score", payload)
        assert code == 401 and body["error"]["type"] == "authentication_error"
        assert post(f"{running.url}/v1/score", payload, key="wrong")[0] == 401
        assert post(f"{running.url}/v1/score", payload, key="s3cret")[0] == 200


def test_serve_refuses_an_open_bind_without_a_key(capsys, monkeypatch):
    from qsit.cli import main

    monkeypatch.delenv("QSIT_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--model", "unused"]) == 2
    assert "without an API key" in capsys.readouterr().err
