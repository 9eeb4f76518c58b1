from __future__ import annotations

import pytest
from pydantic import ValidationError

from latentcast.service.config import Settings


def test_environment_sets_everything(monkeypatch, checkpoints) -> None:
    monkeypatch.setenv("LATENTCAST_MODELS", f'["{checkpoints["toy"]}"]')
    monkeypatch.setenv("LATENTCAST_MAX_WAIT_MS", "7.5")
    monkeypatch.setenv("LATENTCAST_BATCHING", "false")
    monkeypatch.setenv("LATENTCAST_API_KEY", "x" * 20)
    s = Settings()
    assert s.model_paths == [checkpoints["toy"]] and s.max_wait_ms == 7.5 and not s.batching
    assert s.api_key is not None and s.api_key.get_secret_value() == "x" * 20
    assert "x" * 20 not in repr(s)  # the key never shows in logs


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"models": ["/nope.pt"]}, "is not a file"),
        ({"api_key": "short"}, "at least 16 characters"),
        ({"max_wait_ms": -1}, "max_wait_ms"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_unsafe_values_fail_at_start(kw: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Settings(**kw)


def test_the_deploy_defaults_are_valid_settings(monkeypatch) -> None:
    """compose.yaml passes LATENTCAST_API_KEY= and LATENTCAST_MODELS=[] when the host sets neither."""
    monkeypatch.setenv("LATENTCAST_API_KEY", "")
    monkeypatch.setenv("LATENTCAST_MODELS", "[]")
    s = Settings()
    assert (
        s.api_key is None
        and s.models == []
        and {p.stem for p in s.model_paths} == {"pbcseq", "physionet2012", "spirals"}
    )
