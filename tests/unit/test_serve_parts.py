"""The server's small parts on their own: readiness and draining, `Connection: close` while draining, the
Prometheus counters. No model, no server."""

import asyncio

from cnnkit.serve.metrics import Metrics
from cnnkit.serve.shutdown import CloseWhileDraining, ServingState


def test_the_server_accepts_only_when_ready_and_not_draining():
    state = ServingState()
    assert not state.accepting
    state.ready = True
    assert state.accepting
    state.draining = True
    assert not state.accepting


def _respond(middleware, scope_type="http"):
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
        await send({"type": "http.response.body", "body": b"{}"})

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    asyncio.run(CloseWhileDraining(app, middleware)({"type": scope_type}, receive, send))
    return sent


def test_while_draining_every_answer_says_connection_close_once():
    state = ServingState()
    assert _respond(state)[0]["headers"] == [(b"connection", b"keep-alive")]
    state.draining = True
    start, body = _respond(state)
    assert start["headers"] == [(b"connection", b"close")] and body["body"] == b"{}"


def test_metrics_count_batches_and_images():
    m = Metrics()
    m.on_batch(5, 0.002)
    m.on_batch(3, 0.001)
    m.requests.labels("predict", "200").inc()
    text = m.exposition().decode()
    assert "cnnkit_images_total 8.0" in text
    assert "cnnkit_batch_size_count 2.0" in text
    assert 'cnnkit_requests_total{endpoint="predict",status="200"} 1.0' in text


def test_top_k_not_given_is_the_default_or_every_class_whichever_is_fewer():
    import pytest

    from cnnkit.errors import RequestError
    from cnnkit.serve.reading import top_k

    assert top_k(None, 10, 3) == 3 and top_k(None, 2, 3) == 2 and top_k(None, 1, 3) == 1
    assert top_k("2", 2, 3) == 2
    with pytest.raises(RequestError, match=r"top_k must be an integer 1\.\.2, got 3"):
        top_k(3, 2, 3)
