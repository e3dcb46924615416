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


def in_hf_cache(repo_id: str) -> bool:
    """Whether hub repository ``repo_id`` is in the local Hugging Face cache (``HF_HUB_CACHE``,
    default ``~/.cache/huggingface/hub``), so it loads offline. Checks its ``config.json``; the
    weights are checked when they load."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)
