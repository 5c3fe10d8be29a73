"""Each visitor gets a bounded share of Gradio's queue, so one cannot fill it for everyone.

Gradio's queue refuses a job only when the whole queue is full: one session posted 80 /edit jobs in
0.7 s, 68 were queued, and the next visitor got "Queue is full". `share_queue` (patches.py) puts a check in front
of the queue's `push`: a session (Gradio's session hash) may hold PER_SESSION jobs waiting or running,
and a client address PER_ADDRESS (a script can make a new session for every call, not a new address).
A job over its share is answered 429 with a message. Behind a proxy (a Space) the address is the one the
proxy appends to X-Forwarded-For, not the connection's, which is the proxy's own.

Shares count work too: a 30 KB GIF can hold 40 megapixels, and sixteen of them from one address (its
share in jobs) took another visitor's edit from 0.3 s to 28 s. Each job weighs the megapixels of the
uploads it names (`work`, from their headers; at least 1), and a session may hold SESSION_MEGAPIXELS
and an address ADDRESS_MEGAPIXELS waiting or running; a job alone is always let in.
"""

from __future__ import annotations

import ipaddress
import os

PER_SESSION = 6  # a page holds at most a few: prepare, its strip, a download
PER_ADDRESS = 16
SESSION_MEGAPIXELS = 48  # a 40 MP photo and its strip; a phone's 12 MP photo, prepared and edited at once
ADDRESS_MEGAPIXELS = 64


def trusted_proxies() -> int:
    """How many proxies in front of the app append to X-Forwarded-For: one on a Space, none elsewhere."""
    hops = os.environ.get("SMILE_TRUSTED_PROXIES")
    return int(hops) if hops else int(bool(os.environ.get("SPACE_ID")))


def client_address(request, proxies: int) -> str:
    """The client's address: the connection's, or the entry the nearest trusted proxy appended; an IPv6
    address stands for its /64, the block one subscriber is given, so a visitor gets one share, not 2**64."""
    lines = request.headers.getlist("x-forwarded-for")  # a proxy may add a line of its own instead of appending
    forwarded = [part.strip() for part in ",".join(lines).split(",") if part.strip()]
    if proxies and len(forwarded) >= proxies:
        return _visitor(forwarded[-proxies])
    return _visitor(request.client.host) if request.client else "unknown"


def _visitor(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return address  # not an address (a test client's name): taken as it is
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
