"""Is the Hugging Face hub reachable? (Models, datasets and classifiers that need it ask here.)"""

import os

__all__ = ["hub_reachable"]


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint does not answer quickly."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        return False
    import urllib.request

    try:
        urllib.request.urlopen(constants.ENDPOINT, timeout=timeout)  # noqa: S310
    except OSError:
        return False
    return True
