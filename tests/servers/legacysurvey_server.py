"""A local stand-in for the Legacy Survey viewer's cutout services, with faults to inject.

``GET /viewer/cutout.fits?ra=&dec=&layer=&pixscale=&size=&bands=`` answers a FITS file built with
astropy in the real layout: primary HDU float32 (bands, size, size) in the requested band order,
row 0 to the south (CD2_2 > 0), east to the left (CD1_1 < 0), TAN WCS at the position, BANDS and
BAND0.. keywords. The sky: a flat background per band plus a point source 10" north and a fainter
one 10" east of the position, so tests can check orientation; each band's total flux is known.

``GET /viewer/jpeg-cutout?ra=&dec=&layer=&pixscale=&size=&bands=`` answers a colour JPEG encoded
with Pillow as the viewer draws it: (size, size) RGB, row 0 north, east left; a background that
depends on the position (so every source's image differs), a red-heavy point source 10" north
and a blue-heavy one 10" east.

Faults, per position key ``f"{ra:.6f}{dec:+.6f}"`` (set by tests), on both endpoints: ``no_overlap``
(the viewer's error, always), ``partial`` (the western half empty: zeros in FITS, the blank grey in
the JPEG), ``blank`` (all of it empty), ``500_once``, ``500_always``, ``slow_once`` (answers after
``slow_s``), ``truncated_once`` (a Content-Length longer than the body, then the connection
closes), ``half_once`` and ``half_always`` (a complete answer holding the first half of the file).
``latency_s`` delays every answer (for the benchmark). Requests are counted per key; ``queries``
lists every request's (path, parameters).
"""

from __future__ import annotations

import io
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlparse

import numpy as np
from astropy.io import fits
from local_server import LocalHTTPServer
from PIL import Image

BACKGROUND = {"g": 0.01, "r": 0.02, "z": 0.04}  # nanomaggies per pixel
NORTH_FLUX = {"g": 30.0, "r": 50.0, "z": 80.0}  # the point source 10" north
EAST_FLUX = {"g": 10.0, "r": 12.0, "z": 15.0}  # the point source 10" east
OFFSET_ARCSEC = 10.0
JPEG_BLANK = 32  # the viewer's grey where there is no data
JPEG_NORTH = np.array([150.0, 90.0, 40.0])  # R, G, B peak of the point source 10" north
JPEG_EAST = np.array([30.0, 80.0, 140.0])  # and of the one 10" east
FITS_PATH, JPEG_PATH = "/viewer/cutout.fits", "/viewer/jpeg-cutout"


def position_key(ra: float, dec: float) -> str:
    return f"{float(ra):.6f}{float(dec):+.6f}"


def sky_cube(
    ra: float, dec: float, bands: str, size: int, pixscale: float, partial: bool = False, blank: bool = False
) -> np.ndarray:
    """The cube the service serves, FITS row order (row 0 south), columns east (left) to west."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    off = OFFSET_ARCSEC / pixscale
    sigma = 1.2 / pixscale / 2.355
    cube = np.empty((len(bands), size, size), dtype=np.float32)
    for i, band in enumerate(bands):
        img = np.full((size, size), BACKGROUND[band])
        for x0, y0, flux in (
            (c, c + off, NORTH_FLUX[band]),  # north: larger row index in FITS order
            (c - off, c, EAST_FLUX[band]),
        ):  # east: smaller column index
            g = np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))
            img += flux * g / g.sum()
        if partial:
            img[:, size // 2 :] = 0.0  # the western half outside the footprint
        cube[i] = 0.0 if blank else img
    return cube


def fits_bytes(
    ra: float, dec: float, bands: str, size: int, pixscale: float, partial: bool = False, blank: bool = False
) -> bytes:
    hdu = fits.PrimaryHDU(sky_cube(ra, dec, bands, size, pixscale, partial, blank))
    h = hdu.header
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = ra, dec
    h["CRPIX1"] = h["CRPIX2"] = (size + 1) / 2.0
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -pixscale / 3600, 0.0, 0.0, pixscale / 3600
    h["BANDS"] = bands
    for i, band in enumerate(bands):
        h[f"BAND{i}"] = band
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def sky_rgb(
    ra: float, dec: float, size: int = 63, pixscale: float = 1.0, partial: bool = False, blank: bool = False
) -> np.ndarray:
    """The colour image the JPEG service draws: (size, size, 3) uint8 RGB, row 0 north, east left."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    c = (size - 1) / 2.0
    off = OFFSET_ARCSEC / pixscale
    sigma = 1.5 / pixscale
    shift = int(round(abs(ra) * 1000 + abs(dec) * 100)) % 30  # the background depends on the position
    img = np.empty((size, size, 3))
    img[:] = np.array([60.0, 70.0, 80.0]) + shift
    for x0, y0, peak in ((c, c - off, JPEG_NORTH), (c - off, c, JPEG_EAST)):  # north: row above; east: left
        img += np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma**2))[..., None] * peak
    if partial:
        img[:, size // 2 :] = JPEG_BLANK  # the western half outside the footprint
    if blank:
        img[:] = JPEG_BLANK
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def jpeg_bytes(
    ra: float, dec: float, size: int = 63, pixscale: float = 1.0, partial: bool = False, blank: bool = False
) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(sky_rgb(ra, dec, size, pixscale, partial, blank)).save(
        buf, format="JPEG", quality=95, subsampling=0
    )
    return buf.getvalue()


class ViewerServer:
    """The services on 127.0.0.1 in a thread; ``with ViewerServer() as s: s.url, s.jpeg_url``."""

    def __init__(self, latency_s: float = 0.0, slow_s: float = 2.0):
        self.faults: dict[str, str] = {}
        self.counts: Counter = Counter()
        self.queries: list[tuple[str, dict[str, str]]] = []
        self.latency_s = latency_s
        self.slow_s = slow_s
        self._fired: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._server = LocalHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{FITS_PATH}"

    @property
    def jpeg_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{JPEG_PATH}"

    def requests_for(self, ra: float, dec: float) -> int:
        return self.counts[position_key(ra, dec)]

    def _once(self, key: str, fault: str) -> bool:
        with self._lock:
            if self.faults.get(key) != fault or (key, fault) in self._fired:
                return False
            self._fired.add((key, fault))
            return True

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                url = urlparse(self.path)
                if url.path not in (FITS_PATH, JPEG_PATH):
                    return self._send(404, b"not found", "text/plain")
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                ra, dec = float(q["ra"]), float(q["dec"])
                key = position_key(ra, dec)
                with server._lock:
                    server.counts[key] += 1
                    server.queries.append((url.path, q))
                if server.latency_s:
                    time.sleep(server.latency_s)
                fault = server.faults.get(key)
                if fault == "no_overlap":
                    return self._send(
                        500, b"Server Error: no overlap with layer ls-dr10 at this position\n", "text/plain"
                    )
                if fault == "500_always" or server._once(key, "500_once"):
                    return self._send(500, b"Internal Server Error", "text/html")
                if server._once(key, "slow_once"):
                    time.sleep(server.slow_s)
                empty = {"partial": fault == "partial", "blank": fault == "blank"}
                if url.path == JPEG_PATH:
                    body, ctype = (
                        jpeg_bytes(ra, dec, int(q.get("size", 256)), float(q.get("pixscale", 0.262)), **empty),
                        "image/jpeg",
                    )
                else:
                    body, ctype = (
                        fits_bytes(
                            ra,
                            dec,
                            q.get("bands", "grz"),
                            int(q.get("size", 252)),
                            float(q.get("pixscale", 0.25)),
                            **empty,
                        ),
                        "image/fits",
                    )
                if server._once(key, "truncated_once"):
                    self._send(200, body[: len(body) // 3], ctype, length=len(body))
                    self.close_connection = True
                    return None
                if fault == "half_always" or server._once(key, "half_once"):
                    return self._send(200, body[: len(body) // 2], ctype)
                return self._send(200, body, ctype)

        return Handler

    def __enter__(self) -> "ViewerServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
