"""Fetch a post's media with limits on size, type and time; never let one bad file stall a batch.

Local paths must lie under an allowed root; http(s) URLs are fetched with a timeout and a byte
cap, and private/loopback addresses are refused unless allowed (no SSRF through a post).
Audio and video are decoded by the packaged ffmpeg (`pipelines.av_decode`) in a child process
with a time limit and a cap on the seconds decoded.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipelines.av_decode import DecodedVideo, DecodeError, decode_audio, decode_video

IMAGE_TYPES = {"JPEG", "PNG", "WEBP", "GIF", "BMP"}


class MediaError(ValueError):
    """Why a media item could not be used; recorded with the post and sent to the DLQ."""


@dataclass(frozen=True)
class MediaPolicy:
    max_bytes: int = 8 * 1024 * 1024
    timeout_s: float = 5.0
    allowed_roots: tuple[Path, ...] = ()
    allow_private_hosts: bool = False
    max_image_pixels: int = 40_000_000  # checked from the header, before any pixel is decoded
    decode_timeout_s: float = 20.0  # the ffmpeg child is killed after this
    max_seconds: float = 60.0  # audio/video beyond this is not decoded
    video_frames: int = 8  # frames sampled uniformly over a video


def _public_host(host: str) -> bool:
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as e:
        raise MediaError(f"cannot resolve {host}: {e}") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast:
            return False
    return True


def fetch_bytes(uri: str, policy: MediaPolicy) -> bytes:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        if not policy.allow_private_hosts and not _public_host(parsed.hostname or ""):
            raise MediaError(f"refusing to fetch {parsed.hostname}: private or loopback address")
        try:
            with httpx.stream("GET", uri, timeout=policy.timeout_s, follow_redirects=False) as r:
                if r.status_code != 200:
                    raise MediaError(f"HTTP {r.status_code} fetching media")
                chunks, size = [], 0
                for chunk in r.iter_bytes():
                    size += len(chunk)
                    if size > policy.max_bytes:
                        raise MediaError(f"media larger than {policy.max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
        except httpx.HTTPError as e:
            raise MediaError(f"fetch failed: {type(e).__name__}: {e}") from None
    if parsed.scheme not in ("", "file"):
        raise MediaError(f"unsupported media scheme {parsed.scheme!r}")
    path = Path(parsed.path if parsed.scheme == "file" else uri).resolve()
    if not any(path.is_relative_to(root.resolve()) for root in policy.allowed_roots):
        raise MediaError(f"local media outside the allowed roots: {path}")
    if not path.is_file():
        raise MediaError(f"media file not found: {path}")
    if path.stat().st_size > policy.max_bytes:
        raise MediaError(f"media larger than {policy.max_bytes} bytes")
    return path.read_bytes()


def load_image(uri: str, policy: MediaPolicy, sha256: str | None = None) -> Image.Image:
    """Bytes -> RGB image, checking the declared hash and that it really is an image."""
    data = fetch_bytes(uri, policy)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise MediaError("media sha256 does not match the post's declared hash")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format not in IMAGE_TYPES:
            raise MediaError(f"unsupported image type {img.format}")
        w, h = img.size
        if w * h > policy.max_image_pixels:
            raise MediaError(f"image of {w}x{h} pixels exceeds the limit of {policy.max_image_pixels} pixels")
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise MediaError(f"undecodable image: {e}") from None
    return img.convert("RGB")


def _checked_bytes(uri: str, policy: MediaPolicy, sha256: str | None) -> bytes:
    data = fetch_bytes(uri, policy)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise MediaError("media sha256 does not match the post's declared hash")
    return data


def load_audio(uri: str, policy: MediaPolicy, sha256: str | None = None) -> np.ndarray:
    """Bytes -> float32 mono 16 kHz waveform (any format ffmpeg reads), within the policy's limits."""
    data = _checked_bytes(uri, policy, sha256)
    try:
        return decode_audio(data, policy.decode_timeout_s, policy.max_seconds)
    except DecodeError as e:
        raise MediaError(str(e)) from None


def load_video(uri: str, policy: MediaPolicy, sha256: str | None = None) -> DecodedVideo:
    """Bytes -> `policy.video_frames` sampled RGB frames + the audio track (None if it has none)."""
    data = _checked_bytes(uri, policy, sha256)
    try:
        return decode_video(data, policy.video_frames, policy.decode_timeout_s, policy.max_seconds)
    except DecodeError as e:
        raise MediaError(str(e)) from None
