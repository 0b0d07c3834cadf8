"""docs/configuration.md is generated from the settings: it must say what the code says."""

from __future__ import annotations

from services.config import Settings
from services.config_reference import REFERENCE, _sections, effective, reference_markdown


def test_every_knob_says_what_it_does() -> None:
    fields = [("", n, f) for n, f in Settings.model_fields.items()]
    fields += [(s, n, f) for s, cls in _sections().items() for n, f in cls.model_fields.items()]
    missing = [f"{s}.{n}".lstrip(".") for s, n, f in fields if not f.description]
    assert not missing, f"give these a Field(description=...): {missing}"


def test_the_reference_page_is_current() -> None:
    assert REFERENCE.read_text() == reference_markdown(), "run `voxpop config --reference` and commit the page"


def test_effective_values_mask_secrets_and_url_passwords() -> None:
    s = Settings(push_api_key="s3cret", database_url="postgresql://u:pw@db:5432/x")
    out = effective(s)
    assert out["push_api_key"] == "***" and "pw" not in out["database_url"]
    assert out["alerts"]["group_wait_s"] == s.alerts.group_wait_s
