"""`vitkit serve`'s API: predictions equal `vitkit predict`'s, every bad upload is a clear 4xx and the server keeps
serving, concurrent requests run as batches, a full server answers 503, metrics count what happened."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import CLASSES, image_bytes, running_server, tiny_checkpoint
from vitkit import create_model, save
from vitkit.cli.main import main
from vitkit.serve import Engine, ServeSettings, create_app

MAX_UPLOAD_MB = 0.05  # 51 KiB: small enough to test 413 with small bodies
MAX_MEGAPIXELS = 1.0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def engine(checkpoint):
    return Engine.load(checkpoint)


@pytest.fixture(scope="module")
def client(engine):
    settings = ServeSettings(max_batch=8, max_wait_ms=2, max_upload_mb=MAX_UPLOAD_MB, max_megapixels=MAX_MEGAPIXELS)
    with TestClient(create_app(engine, settings)) as test_client:
        yield test_client


def post_raw(client, data: bytes, content_type: str = "image/png", path: str = "/v1/predict"):
    return client.post(path, content=data, headers={"content-type": content_type})


def post_file(client, data: bytes, content_type: str = "image/png", path: str = "/v1/predict"):
    return client.post(path, files={"file": ("upload", data, content_type)})


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels (a decompression bomb needs no more to be refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def predict_cli(checkpoint, files, capsys, top_k: int = 4) -> dict[str, list[dict]]:
    """`vitkit predict --json` on files: top-k list per file name."""
    capsys.readouterr()
    assert main(["predict", str(checkpoint), *map(str, files), "--json", "--top-k", str(top_k), "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    return {entry["path"]: entry["top_k"] for entry in report["predictions"]}


def test_predictions_equal_vitkit_predict(client, checkpoint, tmp_path, capsys):
    """Raw bytes and multipart uploads of PNG, JPEG, CMYK JPEG and 16-bit PNG files answer what predict prints."""
    rgb = Image.open(io.BytesIO(image_bytes(7, (64, 40))))
    grey16 = Image.fromarray((np.random.default_rng(3).integers(0, 65535, (30, 36))).astype(np.uint16))
    files = {
        "small.png": image_bytes(1, (32, 32)),
        "wide.png": image_bytes(2, (80, 45)),
        "photo.jpg": image_bytes(3, (50, 70), fmt="JPEG"),
        "cmyk.jpg": encoded(rgb.convert("CMYK"), "JPEG"),
        "grey16.png": encoded(grey16, "PNG"),
    }
    assert Image.open(io.BytesIO(files["grey16.png"])).mode.startswith("I")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    expected = predict_cli(checkpoint, [tmp_path / name for name in files], capsys)
    tops = set()
    for name, data in files.items():
        for response in (post_raw(client, data, "image/jpeg"), post_file(client, data, "image/png")):
            assert response.status_code == 200, response.text
            served, wanted = response.json()["top_k"], expected[str(tmp_path / name)]
            assert served[0]["label"] == wanted[0]["label"], name
            assert [s["label"] for s in served] == [w["label"] for w in wanted], name
            np.testing.assert_allclose(
                [s["probability"] for s in served], [w["probability"] for w in wanted], atol=2e-6
            )
        tops.add(wanted[0]["label"])
    assert len(tops) > 1  # the images are told apart: the comparison is not between constant answers


def test_answer_names_model_preprocessing_batch_and_latency(client, engine):
    answer = post_raw(client, image_bytes(4), path="/v1/predict?top_k=2").json()
    assert len(answer["top_k"]) == 2 and answer["top_k"][0]["probability"] >= answer["top_k"][1]["probability"]
    assert answer["model"] == {"name": "tiny", "backend": "torch", "sha256": engine.sha256}
    assert answer["preprocessing"]["mean"] == [0.5, 0.45, 0.4] and answer["preprocessing"]["img_size"] == 32
    assert answer["input"] == {"width": 32, "height": 32}
    assert answer["batch"]["size"] >= 1 and answer["latency_ms"] > 0


BAD_UPLOADS = {
    # name: (body, content type, multipart?, status, kind)
    "text declared as an image": (b"hello, not an image", "image/png", False, 400, "not_an_image"),
    "truncated JPEG": (image_bytes(5, (64, 64), fmt="JPEG")[:300], "image/jpeg", False, 400, "unreadable"),
    "empty body": (b"", "image/png", False, 400, "empty"),
    "empty file part": (b"", "image/png", True, 400, "empty"),
    "text/plain request": (image_bytes(5), "text/plain", False, 415, "unsupported_media_type"),
    "JSON request": (b'{"image": 1}', "application/json", False, 415, "unsupported_media_type"),
    "no content type": (image_bytes(5), "", False, 415, "unsupported_media_type"),
    "text file part": (b"hello", "text/plain", True, 415, "unsupported_media_type"),
    "EPS (Ghostscript) image": (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n%%EndComments\nshowpage\n",
        "image/x-eps",
        False,
        415,
        "unsupported_format",
    ),  # fmt: skip
    "upload over --max-upload-mb": (b"\xff" * 60_000, "image/jpeg", False, 413, "too_large"),
    "file part over --max-upload-mb": (b"\xff" * 60_000, "image/jpeg", True, 413, "too_large"),
    "decompression bomb (Pillow's limit)": (png_header(20_000, 20_000), "image/png", False, 413, "too_many_pixels"),
    "over the server's pixel cap": (png_header(2_000, 1_000), "image/png", False, 413, "too_many_pixels"),
}


@pytest.mark.parametrize("name", list(BAD_UPLOADS))
def test_bad_upload_is_a_clear_4xx_and_the_server_keeps_serving(client, name, checkpoint):
    body, content_type, multipart, status, kind = BAD_UPLOADS[name]
    if multipart:
        response = post_file(client, body, content_type)
    else:
        headers = {"content-type": content_type} if content_type else {}
        response = client.post("/v1/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["kind"] == kind
    assert len(error["message"]) > 15
    assert str(checkpoint.parent) not in error["message"] and "/tmp" not in error["message"]
    assert post_raw(client, image_bytes(6)).status_code == 200


def test_animated_image_is_refused_with_422(client):
    frames = [Image.open(io.BytesIO(image_bytes(seed, (32, 32)))).convert("P") for seed in range(3)]
    gif = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    response = post_raw(client, gif, "image/gif")
    assert response.status_code == 422
    assert response.json()["error"]["kind"] == "animated" and "3 frames" in response.json()["error"]["message"]


def test_multipart_without_a_file_part_and_bad_parameters(client):
    response = client.post("/v1/predict", data={"note": "no file"}, files={})
    assert response.status_code in (400, 415)
    response = client.post("/v1/predict", data={"note": "x"}, files={"other": ("a.txt", b"", "")})
    assert response.status_code == 400
    response = client.post(
        "/v1/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 400 and response.json()["error"]["kind"] in ("bad_multipart", "no_file")
    for query in ("top_k=0", "top_k=abc"):
        response = post_raw(client, image_bytes(1), path=f"/v1/predict?{query}")
        assert response.status_code == 422 and response.json()["error"]["kind"] == "invalid_parameter"


def test_explain_returns_rollout_array_and_overlay(client):
    response = post_raw(client, image_bytes(8), path="/v1/explain")
    assert response.status_code == 200
    answer = response.json()
    rollout = np.array(answer["rollout"]["values"])
    assert answer["rollout"]["grid"] == [4, 4] and rollout.shape == (4, 4)
    assert rollout.sum() == pytest.approx(1.0, abs=1e-4)  # a rollout row over the patches of a GAP model sums to 1
    overlay = Image.open(io.BytesIO(__import__("base64").b64decode(answer["overlay_png"].split(",", 1)[1])))
    assert overlay.size == (32, 32) and overlay.mode == "RGB"
    assert answer["top_k"] == post_raw(client, image_bytes(8)).json()["top_k"]
    png = post_raw(client, image_bytes(8), path="/v1/explain?format=png")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_explain_is_422_for_a_model_without_attention(tmp_path):
    torch.manual_seed(0)
    save(create_model("resnet20", num_classes=3), tmp_path / "convnet", class_names=["a", "b", "c"])
    with TestClient(create_app(Engine.load(tmp_path / "convnet"))) as client:
        assert post_raw(client, image_bytes(1)).status_code == 200
        response = post_raw(client, image_bytes(1), path="/v1/explain")
        assert response.status_code == 422
        assert (
            response.json()["error"]["kind"] == "no_attention" and "no attention" in response.json()["error"]["message"]
        )
        assert client.get("/v1/model").json()["explain"] is False


def test_model_card_health_docs_page_and_metrics(client, engine):
    card = client.get("/v1/model").json()
    assert card["classes"] == CLASSES and card["img_size"] == 32 and card["explain"] is True
    assert card["sha256"] == engine.sha256 and len(card["sha256"]) == 64
    assert card["preprocessing"]["source"] == "checkpoint metadata"
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="top-label"' in page.text and "/v1/explain" in page.text
    post_raw(client, b"not an image")
    metrics = client.get("/metrics").text
    assert 'vitkit_errors_total{kind="not_an_image"}' in metrics
    assert 'vitkit_requests_total{endpoint="/v1/predict",status="200"}' in metrics
    for name in ("vitkit_batch_size_bucket", "vitkit_queue_wait_seconds_bucket", "vitkit_request_seconds_bucket"):
        assert name in metrics


def test_concurrent_requests_run_as_batches(engine):
    """16 requests at once with a 300 ms window and --max-batch 8: fewer model calls than requests, none over 8,
    every caller gets its own image's answer."""
    settings = ServeSettings(max_batch=8, max_wait_ms=300)
    app = create_app(engine, settings)
    bodies = [image_bytes(100 + i) for i in range(16)]
    alone = [engine.top(engine.probabilities([engine.pixels(Image.open(io.BytesIO(b)).convert("RGB"))])[0], 4)
             for b in bodies]  # fmt: skip

    async def burst(url: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            replies = await asyncio.gather(
                *(http.post("/v1/predict?top_k=4", content=b, headers={"content-type": "image/png"}) for b in bodies)
            )
        return [reply.json() for reply in replies]

    with running_server(app) as url:
        answers = asyncio.run(burst(url))
        metrics = httpx.get(f"{url}/metrics").text
    sizes = [answer["batch"]["size"] for answer in answers]
    assert max(sizes) > 1 and max(sizes) <= 8
    batches = float(
        next(line.split()[-1] for line in metrics.splitlines() if line.startswith("vitkit_batch_size_count"))
    )
    assert 2 <= batches < 16
    for answer, expected in zip(answers, alone, strict=True):
        assert [t["label"] for t in answer["top_k"]] == [t["label"] for t in expected]
        np.testing.assert_allclose(
            [t["probability"] for t in answer["top_k"]], [t["probability"] for t in expected], atol=1e-5
        )


def test_full_server_answers_503_with_retry_after(engine):
    """Two requests held in the model: the third is refused at once, the first two still succeed."""
    release = threading.Event()

    class Held:
        def __getattr__(self, name):
            return getattr(engine, name)

        def probabilities(self, pixels):
            release.wait(20)
            return engine.probabilities(pixels)

    app = create_app(Held(), ServeSettings(max_batch=1, max_wait_ms=0, max_pending=2))
    results = []
    with TestClient(app) as client:
        server = app.state.server
        workers = [threading.Thread(target=lambda: results.append(post_raw(client, image_bytes(1)))) for _ in range(2)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + 10
        while server.batcher.pending < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = post_raw(client, image_bytes(2))
        release.set()
        for worker in workers:
            worker.join(20)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["kind"] == "overloaded"
        assert [r.status_code for r in results] == [200, 200]
        assert post_raw(client, image_bytes(3)).status_code == 200
        assert 'vitkit_errors_total{kind="overloaded"} 1.0' in client.get("/metrics").text


def test_onnxruntime_backend_serves_what_predict_gives_on_the_onnx_file(checkpoint, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from vitkit.export import export_onnx

    onnx, _ = export_onnx(checkpoint, tmp_path / "tiny.onnx")
    picture = tmp_path / "picture.png"
    picture.write_bytes(image_bytes(21, (50, 36)))
    expected = predict_cli(onnx, [picture], capsys)[str(picture)]
    engine = Engine.load(onnx)
    assert engine.backend == "onnxruntime" and not engine.explains
    with TestClient(create_app(engine)) as client:
        served = post_file(client, picture.read_bytes()).json()["top_k"]
        response = post_raw(client, picture.read_bytes(), path="/v1/explain")
        card = client.get("/v1/model").json()
    assert [s["label"] for s in served] == [e["label"] for e in expected]
    np.testing.assert_allclose([s["probability"] for s in served], [e["probability"] for e in expected], atol=2e-6)
    assert response.status_code == 422 and "--backend torch" in response.json()["error"]["message"]
    assert card["name"] == "tiny.onnx" and str(tmp_path) not in json.dumps(card)  # the file's name, not its path


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--max-upload-mb", "0"], "--max-upload-mb must be > 0"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be >= 0"),
    ],
)
def test_serve_flags_are_checked_before_loading(flags, message, capsys):
    assert main(["serve", "no/such/run", *flags]) == 2
    assert message in capsys.readouterr().err


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(engine):
    """With a 3-s batching window and nobody else in the server, the request runs at once."""
    with TestClient(create_app(engine, ServeSettings(max_batch=8, max_wait_ms=3000))) as client:
        post_raw(client, image_bytes(1))
        started = time.perf_counter()
        answer = post_raw(client, image_bytes(2)).json()
        elapsed = time.perf_counter() - started
    assert answer["batch"]["size"] == 1 and answer["batch"]["queue_ms"] < 1000 and elapsed < 2.0


@pytest.mark.slow  # one AOTInductor compile: 12-18 s on 2 busy cores
def test_aoti_backend_serves_what_predict_gives_on_the_pt2_package(checkpoint, tmp_path, capsys):
    pytest.importorskip("torch._inductor")
    package = tmp_path / "tiny.pt2"
    assert main(["export", str(checkpoint), "--format", "pt2", "--out", str(package)]) == 0
    picture = tmp_path / "picture.png"
    picture.write_bytes(image_bytes(22, (44, 52)))
    expected = predict_cli(package, [picture], capsys)[str(picture)]
    engine = Engine.load(package)
    assert engine.backend == "aoti" and not engine.explains
    with TestClient(create_app(engine)) as client:
        served = post_raw(client, picture.read_bytes()).json()["top_k"]
    assert [s["label"] for s in served] == [e["label"] for e in expected]
    np.testing.assert_allclose([s["probability"] for s in served], [e["probability"] for e in expected], atol=2e-6)
