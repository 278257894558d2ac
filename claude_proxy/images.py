"""
Images as Anthropic image blocks: OpenAI image content parts (data: URLs), and
base64 image data as any door receives it. Pure.

Inline `data:` URLs are taken. The proxy never fetches a remote image itself;
with `--image-urls` an http(s) URL goes to the API as a URL image source, for
Anthropic's servers to fetch.
"""

from __future__ import annotations

import base64
import binascii

from claude_proxy.errors import bad_request

# The Anthropic API's limit per image. It measures the base64 text, not the
# decoded bytes ("image exceeds 5 MB maximum: 5577016 bytes > 5242880 bytes"
# for a 4 MiB file), so that is what is checked: about 3.75 MiB of image.
MAX_IMAGE_BYTES = 5 * 1024 * 1024

# Magic bytes of the formats the Anthropic API takes. WebP is checked apart:
# its tag sits after the RIFF chunk size.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)

_INLINE_HINT = "send the image inline as a base64 data: URL (data:image/png;base64,...)"


def sniff(data: bytes) -> str | None:
    """
    The media type the bytes really are, if one the Anthropic API takes.
    """
    for magic, media_type in _SIGNATURES:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _url(part: object, where: str) -> tuple[str, str]:
    """
    The image URL of a content part, and the param that names it.
    """
    if not isinstance(part, dict):
        raise bad_request(f"{where} must be an object.", where)
    image = part.get("image_url")
    if isinstance(image, str):
        url, param = image, f"{where}.image_url"
    elif isinstance(image, dict):
        url, param = image.get("url"), f"{where}.image_url.url"
    else:
        raise bad_request(f"{where}.image_url must be an object with a url.", f"{where}.image_url")
    if not isinstance(url, str) or not url:
        raise bad_request(f"{param} must be a non-empty string.", param)
    return url, param


def image_block(part: dict, where: str, allow_urls: bool = False) -> dict:
    """
    An Anthropic image block for an OpenAI image content part (`image_url` of
    Chat Completions, `input_image` of Responses); `where` names the part in
    errors, e.g. "messages[2].content[1]". The part's `detail` is ignored:
    Anthropic has no such setting.
    """
    url, param = _url(part, where)
    return url_image(url, param, allow_urls)


def url_image(url: str, param: str, allow_urls: bool = False) -> dict:
    """An image block for a data: URL, or (with `allow_urls`) an http(s) URL for the API to fetch."""
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "https"):
        if allow_urls:
            return {"type": "image", "source": {"type": "url", "url": url}}
        raise bad_request(
            f"{param}: this proxy does not pass on remote image URLs unless started with "
            f"--image-urls; {_INLINE_HINT}.", param, "unsupported_image_url")
    if scheme != "data":
        raise bad_request(f"{param} must be a data: URL; {_INLINE_HINT}.", param,
                          "invalid_image_url")
    header, comma, payload = url[len("data:"):].partition(",")
    declared, *params = header.split(";")
    if not comma or not params or params[-1].strip().lower() != "base64":
        raise bad_request(f"{param} must be a base64 data: URL, data:<type>;base64,<data>.",
                          param, "invalid_image_url")
    return base64_image(payload, declared, param)


def base64_image(payload: str, declared: str, param: str) -> dict:
    """An image block for base64 image data, its type taken from the bytes."""
    # Valid strict base64 is exactly as long as its canonical form, so this is
    # the API's check, made before decoding what may be a very large string.
    if len(payload) > MAX_IMAGE_BYTES:
        raise bad_request(
            f"{param}: the image is {len(payload)} bytes as base64; the Anthropic API takes at "
            f"most {MAX_IMAGE_BYTES} (about {MAX_IMAGE_BYTES * 3 / 4 / 2**20:g} MiB of image).",
            param, "image_too_large")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"{param} does not hold valid base64: {e}.", param,
                          "invalid_image_url")
    media_type = sniff(data)
    if media_type is None:
        said = f" (declared {declared})" if declared else ""
        raise bad_request(
            f"{param} is not a PNG, JPEG, GIF or WebP image{said}.", param, "unsupported_image")
    # The API rejects a media_type that does not match the bytes: trust the bytes.
    return {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": media_type,
            "data": base64.b64encode(data).decode("ascii"),
        },
    }
