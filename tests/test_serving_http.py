"""The HTTP server over a real socket, in a subprocess.

Covers every endpoint and bad input, a bounded load test (2,000 requests
from 8 clients), a bounded schemathesis run and a hot reload: a new
version exported into the served directory while requests keep coming.
"""

import concurrent.futures
import contextlib
import json
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests import export_fixtures
from tests.conftest import subprocess_env

recommender = export_fixtures.recommender
serving_export = export_fixtures.serving_export

MAX_BODY = 64 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(serving_export, tmp_path_factory):
    """(base url, served export dir) of a running server on a free port.

    Serves a copy of the session export, so that the reload test can add
    a version without other tests seeing it.
    """
    root = tmp_path_factory.mktemp("served") / "export"
    shutil.copytree(serving_export.version_dir, root / "1")
    port = _free_port()
    log = open(root.parent / "server.log", "w+")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            "--model",
            str(root),
            "--port",
            str(port),
            "--reload-interval",
            "0.5",
            "--max-body-bytes",
            str(MAX_BODY),
            "--log-level",
            "warning",
        ],
        cwd=export_fixtures.REPO_ROOT,
        env=subprocess_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not answer /healthz within 120 s")
        time.sleep(0.3)
    yield url, root
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.seek(0)
    text = log.read()
    log.close()
    # Unexpected errors are logged with this line; none may have occurred.
    assert "unhandled error" not in text, text[-3000:]


@pytest.fixture(scope="module")
def known_user(recommender):
    batch = recommender.recommend_batch([str(u) for u in range(1, 50)], 1)
    return next(b.user_id for b in batch if b.known)


def test_health_model_and_docs(server, recommender):
    url, _ = server
    assert httpx.get(f"{url}/healthz").json() == {
        "status": "ok",
        "model_version": 1,
    }
    info = httpx.get(f"{url}/v1/model").json()
    assert info["model_version"] == 1
    assert info["num_items"] == recommender.num_items
    assert info["max_k"] == recommender.max_k
    assert info["score_kind"] == "isotonic"
    assert info["index"]["kind"] == "brute_force"
    assert "model" in info["metrics"]
    assert info["filter_fields"]["year"] == "numeric"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/healthz", "/v1/model", "/v1/recommend"} <= set(spec["paths"])
    assert httpx.get(f"{url}/docs").status_code == 200


def test_recommend_endpoints(server, recommender, known_user):
    url, _ = server
    body = {"user_id": known_user, "k": 5}
    got = httpx.post(f"{url}/v1/recommend", json=body).json()
    expected = recommender.recommend(known_user, k=5)
    assert [i["item_id"] for i in got["items"]] == expected.item_ids
    assert got["score_kind"] == "isotonic"
    assert set(got["items"][0]["metadata"]) >= {"title", "categories", "year"}

    # ids may be sent as numbers
    numeric = httpx.post(
        f"{url}/v1/recommend", json={"user_id": int(known_user), "k": 5}
    ).json()
    assert numeric["items"] == got["items"]

    history = {
        "history": recommender.catalogue.item_ids[:3],
        "k": 4,
        "exclude": [got["items"][0]["item_id"]],
        "filters": {"year": {"min": 1900}},
        "diversity": 0.3,
    }
    r = httpx.post(f"{url}/v1/recommend", json=history)
    assert r.status_code == 200 and len(r.json()["items"]) == 4

    item = recommender.catalogue.item_ids[0]
    r = httpx.get(f"{url}/v1/items/{item}/similar", params={"k": 3})
    assert [i["item_id"] for i in r.json()["items"]] == (
        recommender.similar_items(item, k=3).item_ids
    )


@pytest.mark.parametrize(
    "body, status, detail",
    [
        ({"user_id": "1", "history": ["1"]}, 422, "exactly one"),
        ({"k": 3}, 422, "exactly one"),
        ({"user_id": "1", "k": 0}, 422, "greater than or equal to 1"),
        ({"user_id": "1", "k": 101}, 422, "k must be in 1..100"),
        ({"user_id": "1", "k": "many"}, 422, "integer"),
        ({"user_id": "1", "diversity": 1.5}, 422, "less than or equal"),
        ({"user_id": "1", "colour": "red"}, 422, "Extra inputs"),
        ({"user_id": "no-such-user"}, 404, "user_id 'no-such-user' is unknown"),
        ({"history": ["nope"]}, 404, "none of the 1 item ids"),
        (
            {"user_id": "1", "filters": {"genre": ["Drama"]}},
            422,
            "unknown field 'genre'; valid fields are",
        ),
        ({"user_id": "1", "filters": {"year": {"low": 1}}}, 422, "filters"),
        ([1, 2], 422, "body"),
    ],
)
def test_bad_requests(server, body, status, detail):
    url, _ = server
    r = httpx.post(f"{url}/v1/recommend", json=body)
    assert r.status_code == status, r.text
    assert detail in r.text
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    "content, headers",
    [
        (b'{"user_id": ', {"content-type": "application/json"}),
        (b'{"user_id": "1", "diversity": NaN}', {}),
        (b"", {"content-type": "application/json"}),
        (b"user_id=1", {"content-type": "application/x-www-form-urlencoded"}),
    ],
)
def test_malformed_bodies(server, content, headers):
    url, _ = server
    r = httpx.post(f"{url}/v1/recommend", content=content, headers=headers)
    assert 400 <= r.status_code < 500, r.text
    assert "Traceback" not in r.text and "detail" in r.json()


def test_unknown_item_and_bad_k_on_similar(server):
    url, _ = server
    r = httpx.get(f"{url}/v1/items/no-such-item/similar")
    assert r.status_code == 404 and "no-such-item" in r.json()["detail"]
    r = httpx.get(f"{url}/v1/items/1/similar", params={"k": 1000})
    assert r.status_code == 422 and "k must be in" in r.json()["detail"]
    r = httpx.get(f"{url}/v1/items/1/similar", params={"k": "x"})
    assert r.status_code == 422


def test_oversized_bodies(server):
    url, _ = server
    body = json.dumps({"history": ["x" * 100] * 1000}).encode()
    assert len(body) > MAX_BODY
    r = httpx.post(
        f"{url}/v1/recommend",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and "body over" in r.json()["detail"]

    def chunks():  # no Content-Length: the streamed size is counted
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    r = httpx.post(
        f"{url}/v1/recommend",
        content=chunks(),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413


def test_load_2000_requests_8_clients(server, recommender, known_user):
    url, _ = server
    items = recommender.catalogue.item_ids
    users = [
        b.user_id
        for b in recommender.recommend_batch([str(u) for u in range(1, 60)], 1)
        if b.known
    ]

    def request(n: int):
        """The n-th request and the item ids the export must answer."""
        if n % 3 == 0:
            item = items[n % len(items)]
            return ("get", f"/v1/items/{item}/similar", None), (
                lambda: recommender.similar_items(item, k=10).item_ids
            )
        if n % 3 == 1:
            user = users[n % len(users)]
            return ("post", "/v1/recommend", {"user_id": user, "k": 10}), (
                lambda: recommender.recommend(user, k=10).item_ids
            )
        history = items[n % 50 : n % 50 + 5]
        return ("post", "/v1/recommend", {"history": history, "k": 10}), (
            lambda: recommender.recommend_for_history(history, k=10).item_ids
        )

    # every distinct request answered in process first, to compare with
    expected = {}
    for n in range(2000):
        (method, path, body), answer = request(n)
        key = (path, json.dumps(body))
        if key not in expected:
            expected[key] = answer()

    def client(worker: int) -> list[str]:
        failures = []
        with httpx.Client(base_url=url, timeout=30) as c:
            for i in range(250):
                (method, path, body), _ = request(worker * 250 + i)
                if method == "get":
                    r = c.get(path)
                else:
                    r = c.post(path, json=body)
                if r.status_code != 200:
                    failures.append(f"{path} {r.status_code} {r.text[:200]}")
                    continue
                got = [item["item_id"] for item in r.json()["items"]]
                if got != expected[(path, json.dumps(body))]:
                    failures.append(f"{path} {body}: wrong items {got}")
        return failures

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        failures = sum(pool.map(client, range(8)), [])
    elapsed = time.perf_counter() - start
    assert failures == [], failures[:5]
    print(f"2000 requests in {elapsed:.1f} s ({2000 / elapsed:.0f}/s)")


def test_schemathesis_no_server_errors(server, tmp_path):
    url, _ = server
    proc = subprocess.run(
        [
            # the command schemathesis installs beside this interpreter
            str(pathlib.Path(sys.executable).parent / "st"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--request-timeout",
            "10",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_hot_reload_without_errors(server, serving_export):
    url, root = server
    results: list[tuple[int, int]] = []
    stop = threading.Event()

    def hammer():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not stop.is_set():
                r = c.get("/v1/items/1/similar", params={"k": 5})
                version = r.json().get("model_version", -1)
                results.append((r.status_code, version))

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        export_fixtures.export_new_version(serving_export.run_dir, root)
        assert (root / "2").is_dir()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/model").json()["model_version"] != 2:
            assert time.monotonic() < deadline, "version 2 never served"
            time.sleep(0.2)
        time.sleep(1.0)  # requests after the swap
    finally:
        stop.set()
        thread.join()
    info = httpx.get(f"{url}/v1/model").json()
    assert info["versions_available"] == [1, 2]
    assert {status for status, _ in results} == {200}
    versions = [v for _, v in results]
    assert versions[0] == 1 and versions[-1] == 2
    assert versions == sorted(versions)  # never back to the old version
