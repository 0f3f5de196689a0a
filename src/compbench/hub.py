"""Is the Hugging Face Hub reachable? Asked once, answered in at most a few seconds.

``datasets.load_dataset`` and ``from_pretrained`` retry an unreachable hub for 20-30 s before
raising a ``ConnectionError`` that does not say what to do. Probing a TCP connection to the
hub first lets compbench refuse at once, naming the setting that reads local files instead.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from urllib.parse import urlparse

#: Seconds allowed for resolving and connecting to the hub before calling it unreachable.
PROBE_TIMEOUT_S = 3.0


def offline_requested() -> bool:
    """Whether the user asked the HF libraries to stay offline (``HF_HUB_OFFLINE`` and friends)."""
    return any(os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the hub (``HF_ENDPOINT``, default huggingface.co:443) opens
    within ``timeout`` seconds; False when offline mode is requested or the probe fails."""
    if offline_requested():
        return False
    return host_reachable(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), timeout)


@functools.lru_cache(maxsize=8)
def host_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a TCP connection to the host of ``endpoint`` (a URL) opens within ``timeout`` s."""
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    result: list[bool] = []

    def probe() -> None:  # DNS resolution has no timeout of its own: run it in a thread
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
