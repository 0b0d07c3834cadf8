"""One alert rule, four spellings (evaluator, API, ORM, CLI): they must agree field by field."""

from __future__ import annotations

import inspect
import typing
from dataclasses import MISSING, fields

from pipelines.trends.rules import KINDS, METRICS, Rule
from services.alerts.cli import rules_add
from services.api.schemas import RuleIn, RulePatch
from services.storage.alert_models import AlertRule

RULE = {f.name: f for f in fields(Rule) if f.name != "id"}
CLI_NAMES = {"window": "window_size", "baseline": "baseline_method"}  # shorter flags for the same fields


def test_the_api_takes_every_rule_field_with_the_evaluators_default() -> None:
    assert set(RULE) <= set(RuleIn.model_fields), set(RULE) - set(RuleIn.model_fields)
    assert set(RuleIn.model_fields) == set(RulePatch.model_fields)
    for name, f in RULE.items():
        if f.default is not MISSING:
            assert RuleIn.model_fields[name].default == f.default, name


def test_the_api_accepts_exactly_the_kinds_and_metrics_the_evaluator_knows() -> None:
    assert set(typing.get_args(RuleIn.model_fields["kind"].annotation)) == set(KINDS)
    assert set(typing.get_args(RuleIn.model_fields["metric"].annotation)) == set(METRICS)


def test_the_table_stores_every_field_the_api_takes() -> None:
    columns = set(AlertRule.__table__.columns.keys())
    assert set(RuleIn.model_fields) <= columns, set(RuleIn.model_fields) - columns


def test_the_cli_sets_every_rule_field_with_the_same_default() -> None:
    params = {CLI_NAMES.get(n, n): p for n, p in inspect.signature(rules_add).parameters.items()}
    assert set(RULE) <= set(params), f"voxpop alerts rules add lacks {sorted(set(RULE) - set(params))}"
    for name, f in RULE.items():
        cli = params[name].default
        if f.default is not MISSING and cli is not inspect.Parameter.empty and cli is not None:  # None: not sent
            assert cli == f.default, name
