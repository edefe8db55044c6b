"""The search service's API and page against the real Searcher on the tiny index (TestClient, no network)."""

import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tbpr.search.service import STATIC_DIR, create_app

QUERY = "a man in a blue jacket and black trousers"
LOCAL = "http://localhost"  # TestClient's default Host, testserver, is not a name the service answers for


@pytest.fixture(scope="module")
def client(tiny_searcher):
    return TestClient(create_app(tiny_searcher), base_url=LOCAL)


def test_search_returns_the_searchers_ranking(client, tiny_searcher):
    response = client.post("/api/search", json={"query": QUERY, "k": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == QUERY and body["k"] == 7 and body["took_ms"] >= 0
    hits = body["results"]
    assert [h["rank"] for h in hits] == list(range(1, 8))
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = tiny_searcher.search(QUERY, k=7)
    assert [h["id"] for h in hits] == [r.id for r in expected]
    assert [h["path"] for h in hits] == [r.path for r in expected]
    assert scores == pytest.approx([r.score for r in expected], abs=1e-6)
    assert all(h["image_url"] == f"/api/images/{h['id']}" for h in hits)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_k_is_respected(client, tiny_searcher, k):
    hits = client.post("/api/search", json={"query": QUERY, "k": k}).json()["results"]
    assert len(hits) == min(k, len(tiny_searcher))
    assert len({h["id"] for h in hits}) == len(hits)


def test_k_defaults_to_10(client):
    assert len(client.post("/api/search", json={"query": QUERY}).json()["results"]) == 10


def test_k_beyond_the_gallery_returns_the_whole_gallery(tiny_searcher):
    client = TestClient(create_app(tiny_searcher, max_k=1000), base_url=LOCAL)
    hits = client.post("/api/search", json={"query": QUERY, "k": 1000}).json()["results"]
    assert len(hits) == len(tiny_searcher)


def test_image_urls_serve_the_gallery_jpeg_bytes(client, synth_tiny):
    hits = client.post("/api/search", json={"query": QUERY, "k": 5}).json()["results"]
    for hit in hits:
        response = client.get(hit["image_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert response.content[:3] == b"\xff\xd8\xff"  # JPEG magic
        assert response.content == (synth_tiny / "imgs" / hit["path"]).read_bytes()


def test_health_reports_gallery_and_model(client, synth_tiny):
    body = client.get("/api/health").json()
    assert body == {
        "status": "ok",
        "gallery_size": len(list((synth_tiny / "imgs").rglob("*.jpg"))),
        "model": "tbpr-micro",
        "index_kind": "flat",
    }


def test_openapi_describes_the_api_and_its_limits(tiny_searcher):
    client = TestClient(create_app(tiny_searcher, max_query_chars=50, max_k=20), base_url=LOCAL)
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/api/search", "/api/similar", "/api/images/{image_id}", "/api/health"}
    request = schema["components"]["schemas"]["SearchRequest"]["properties"]
    assert request["query"]["maxLength"] == 50 and request["query"]["minLength"] == 1
    assert (request["k"]["minimum"], request["k"]["maximum"]) == (1, 20)
    hit = schema["components"]["schemas"]["SearchHit"]["properties"]
    assert {"rank", "id", "score", "image_url", "path"} <= set(hit)
    assert "securitySchemes" not in schema["components"]  # no key configured: no 401 either
    assert not any("401" in op["responses"] for item in schema["paths"].values() for op in item.values())
    # the configured limits are the enforced ones
    assert client.post("/api/search", json={"query": "x" * 50, "k": 20}).status_code == 200
    assert client.post("/api/search", json={"query": "x" * 51}).status_code == 422
    assert client.post("/api/search", json={"query": QUERY, "k": 21}).status_code == 422
    assert client.get("/docs").status_code == 200


def test_openapi_declares_the_key_schemes_when_a_key_is_set(tiny_searcher):
    schema = TestClient(create_app(tiny_searcher, api_key="k"), base_url=LOCAL).get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"apiKey", "bearer"}
    assert "401" in schema["paths"]["/api/search"]["post"]["responses"]


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(asset).status_code == 200, asset
    assert {"/static/app.js", "/static/style.css"} <= set(re.findall(r'"(/static/[^"]+)"', page.text))


@pytest.mark.parametrize("name", sorted(p.name for p in STATIC_DIR.iterdir()))
def test_static_files_reference_no_external_resource(name):
    text = (STATIC_DIR / name).read_text()
    text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # an XML namespace, never fetched
    assert not re.search(r"(?i:https?:)|//[a-z0-9.-]+\.[a-z]{2,}|@import|\burl\(", text), name


def test_similar_ranks_the_gallery_by_the_images_own_embedding(client, tiny_searcher, tiny_index):
    """Image to image, checked against a hand-made ranking of the stored image-tower embeddings."""
    meta = json.loads((tiny_index / "index.json").read_text())
    data = tiny_index / meta["data"]
    emb = np.load(data / "embeddings.npy")
    items = json.loads((data / "items.json").read_text())
    row = 5
    scores = emb @ emb[row]
    order = [i for i in np.argsort(-scores, kind="stable") if i != row][:4]
    response = client.post("/api/similar", json={"id": items["id"][row], "k": 4})
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["path"], body["k"]) == (items["id"][row], items["path"][row], 4)
    assert [h["id"] for h in body["results"]] == [items["id"][i] for i in order]
    assert [h["rank"] for h in body["results"]] == [1, 2, 3, 4]
    assert [h["score"] for h in body["results"]] == pytest.approx([float(scores[i]) for i in order], abs=1e-5)
    assert all(h["image_url"] == f"/api/images/{h['id']}" for h in body["results"])
    everything = client.post("/api/similar", json={"id": items["id"][row], "k": 100}).json()["results"]
    assert len(everything) == min(100, len(tiny_searcher) - 1)  # every other image, never itself


def test_similar_refuses_unknown_and_malformed_ids(client):
    response = client.post("/api/similar", json={"id": "0123456789abcdef"})
    assert response.status_code == 404 and "no image with id" in response.json()["detail"]
    for body in ({"id": "../etc/passwd"}, {"id": "abc", "k": 0}, {"id": "abc", "extra": 1}, {}):
        assert client.post("/api/similar", json=body).status_code == 422
