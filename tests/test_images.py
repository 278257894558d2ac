import base64

import pytest

from claude_proxy.errors import APIError
from claude_proxy.images import MAX_IMAGE_BYTES, image_block, sniff

WHERE = "messages[2].content[1]"
URL_PARAM = f"{WHERE}.image_url.url"

# A real 1x1 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG = base64.b64decode(PNG_B64)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def part(url, detail="auto"):
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def rejected(p, param=URL_PARAM, code=None):
    with pytest.raises(APIError) as caught:
        image_block(p, WHERE)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, param, code)
    return error


def test_real_png():
    block = image_block(part(f"data:image/png;base64,{PNG_B64}"), WHERE)
    assert block == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64},
    }
    assert base64.b64decode(block["source"]["data"]).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(
    "data, media_type",
    [
        (JPEG, "image/jpeg"),
        (b"GIF89a\x01\x00\x01\x00\x80\x00\x00", "image/gif"),
        (b"GIF87a\x01\x00\x01\x00\x80\x00\x00", "image/gif"),
        (WEBP, "image/webp"),
    ],
)
def test_other_formats_are_sniffed(data, media_type):
    block = image_block(part(data_url(data, media_type)), WHERE)
    assert block["source"]["media_type"] == media_type
    assert base64.b64decode(block["source"]["data"]) == data


def test_the_bytes_win_over_the_declared_type():
    assert image_block(part(data_url(PNG, "image/jpg")), WHERE)["source"]["media_type"] == "image/png"
    assert image_block(part(data_url(JPEG, "image/png")), WHERE)["source"]["media_type"] == "image/jpeg"
    assert image_block(part(f"data:;base64,{PNG_B64}"), WHERE)["source"]["media_type"] == "image/png"


def test_data_url_scheme_and_parameters():
    url = f"DATA:image/png;name=dot.png;BASE64,{PNG_B64}"
    assert image_block(part(url), WHERE)["source"]["data"] == PNG_B64


def test_base64_is_re_encoded_canonically():
    # The last "g" carries 4 unused bits; "h" sets one, which strict decoding allows.
    loose = PNG_B64[:-3] + "h=="
    assert loose != PNG_B64 and base64.b64decode(loose) == PNG
    assert image_block(part(f"data:image/png;base64,{loose}"), WHERE)["source"]["data"] == PNG_B64


def test_string_form_of_image_url():
    block = image_block({"type": "image_url", "image_url": data_url(PNG)}, WHERE)
    assert block["source"]["media_type"] == "image/png"
    rejected({"type": "image_url", "image_url": "https://x/y.png"}, f"{WHERE}.image_url",
             "unsupported_image_url")


@pytest.mark.parametrize(
    "payload",
    ["not base64!!", PNG_B64.rstrip("="), PNG_B64[:40] + "\n" + PNG_B64[40:], PNG_B64 + "AA==",
     "iVBO-_8=", "iVBO%2B", "ïVBORw=="],
)
def test_bad_base64(payload):
    rejected(part(f"data:image/png;base64,{payload}"), code="invalid_image_url")


@pytest.mark.parametrize(
    "data, media_type",
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>', "image/svg+xml"),
        (b"BM\x3a\x00\x00\x00", "image/bmp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "image/webp"),
        (b"", "image/png"),
    ],
)
def test_unsupported_image_types(data, media_type):
    error = rejected(part(data_url(data, media_type)), code="unsupported_image")
    assert "PNG, JPEG, GIF or WebP" in error.message


def test_size_limit_is_on_the_base64_the_api_measures():
    at_limit = b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_BYTES * 3 // 4 - 8)
    assert len(base64.b64encode(at_limit)) == MAX_IMAGE_BYTES
    assert image_block(part(data_url(at_limit)), WHERE)["source"]["media_type"] == "image/png"
    error = rejected(part(data_url(at_limit + b"\0")), code="image_too_large")
    assert str(MAX_IMAGE_BYTES) in error.message


def test_far_too_large_is_refused_before_decoding():
    rejected(part("data:image/png;base64," + "!" * (MAX_IMAGE_BYTES + 1)), code="image_too_large")


@pytest.mark.parametrize("url", ["http://example.com/cat.png", "HTTPS://example.com/cat.png"])
def test_remote_urls_are_refused_unless_passed_on(url):
    error = rejected(part(url), code="unsupported_image_url")
    assert "--image-urls" in error.message
    assert "base64 data: URL" in error.message
    assert image_block(part(url), "m", allow_urls=True) == {
        "type": "image", "source": {"type": "url", "url": url}}


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/cat.png", "cat.png", "data:image/png,%89PNG",
            f"data:image/png;base64;{PNG_B64}", f"data:image/png;base64x,{PNG_B64}"],
)
def test_other_urls_are_refused(url):
    rejected(part(url), code="invalid_image_url")


@pytest.mark.parametrize(
    "bad, param",
    [
        ({"type": "image_url"}, f"{WHERE}.image_url"),
        ({"type": "image_url", "image_url": None}, f"{WHERE}.image_url"),
        ({"type": "image_url", "image_url": 7}, f"{WHERE}.image_url"),
        ({"type": "image_url", "image_url": {}}, URL_PARAM),
        ({"type": "image_url", "image_url": {"url": ""}}, URL_PARAM),
        ({"type": "image_url", "image_url": {"url": 42}}, URL_PARAM),
        ({"type": "image_url", "image_url": ""}, f"{WHERE}.image_url"),
        ("data:image/png;base64,AAAA", WHERE),
    ],
)
def test_malformed_parts_name_where(bad, param):
    error = rejected(bad, param)
    assert param in error.message


def test_sniff():
    assert sniff(PNG) == "image/png"
    assert sniff(b"\xff\xd8") is None
    assert sniff(b"RIFF") is None
    assert sniff(b"GIF88a") is None
