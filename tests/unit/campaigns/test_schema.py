"""Campaign files: shipped ones validate; bad input names file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from nudge.campaigns.schema import (
    CampaignError,
    check_campaign,
    check_folder,
    load_campaign,
    load_campaigns,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[3]
CAMPAIGNS = REPO / "config" / "campaigns"
TEMPLATES = REPO / "email_templates"
SHIPPED = {
    "winback",
    "new_arrivals",
    "cross_sell",
    "buy_again",
    "cart_abandonment",
    "picked_for_you",
}

GOOD = """\
name: promo
description: A test campaign.
trigger:
  schedule: "0 10 * * mon"
audience: stage in [at_risk, churned] and clv >= 20
recommend:
  strategy: auto
  count: 6
  rules:
    min_items: 3
template: winback
variants:
  - name: a
    subject: "Hello {{ recipient.first_name or 'there' }}"
    preheader: Things for you
value:
  response_rate: 0.03
"""


def write(folder: Path, text: str, name: str = "promo") -> Path:
    """Write a campaign file and return its path."""
    path = folder / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(path: Path) -> CampaignError:
    """Load a campaign that must fail and return the error."""
    with pytest.raises(CampaignError) as caught:
        load_campaign(path)
    return caught.value


def test_the_shipped_campaigns_validate_with_their_templates() -> None:
    loaded, problems = check_folder(CAMPAIGNS, TEMPLATES)

    assert problems == []
    assert {f.campaign.name for f in loaded} == SHIPPED
    approvals = {f.campaign.name: f.campaign.approval for f in loaded}
    assert approvals["winback"] == "required"


def test_a_good_file_loads(tmp_path: Path) -> None:
    loaded = load_campaign(write(tmp_path, GOOD))

    assert loaded.campaign.name == "promo"
    assert loaded.campaign.recommend is not None
    assert loaded.campaign.recommend.rules.min_items == 3
    assert loaded.line_of("variants", 0, "subject") == 14


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        (
            '"0 10 * * mon"',
            '"0 25 * * mon"',
            4,
            "trigger.schedule: hour 25 is out of range 0-23",
        ),
        ('"0 10 * * mon"', '"every monday"', 4, "expected 5 fields"),
        (
            "audience: stage in",
            "audience: stag in",
            5,
            "audience: unknown field 'stag'",
        ),
        (
            "clv >= 20",
            "clv ~ 20",
            5,
            "audience: unexpected character '~' (character 37 of the expression)",
        ),
        (
            "stage in [at_risk, churned]",
            "stage > new",
            5,
            "audience: operator '>' does not apply to text field stage",
        ),
        ("at_risk, churned", "at-risk, churned", 5, "unknown stage 'at-risk'"),
        ("strategy: auto", "strategy: magic", 7, "unknown strategy 'magic'"),
        ("min_items: 3", "min_items: 0", 10, "recommend.rules.min_items"),
        ("min_items: 3", "min_item: 3", 10, "unknown field 'min_item'"),
        (
            "description: A test",
            "descripton: A test",
            2,
            "unknown field 'descripton'; did you mean 'description'?",
        ),
        ("response_rate: 0.03", "response_rate: 2", 17, "value.response_rate"),
    ],
)
def test_bad_values_name_file_line_and_field(
    tmp_path: Path, old: str, new: str, line: int, expected: str
) -> None:
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new))

    error = error_of(path)

    assert error.line == line
    assert str(error).startswith(f"{path}:{line}: ")
    assert expected in str(error)
    assert "\n" not in str(error)


def test_a_missing_field_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("value:\n  response_rate: 0.03\n", ""))

    error = error_of(path)

    assert str(error) == f"{path}:1: value: required field is missing"


def test_a_subject_over_200_characters_is_refused(tmp_path: Path) -> None:
    long = "A" * 201
    path = write(tmp_path, GOOD.replace("Hello {{", f"{long} {{{{"))

    error = error_of(path)

    assert error.line == 14
    assert "variants[0].subject" in str(error)
    assert "(at most 200)" in str(error)


def test_a_multi_line_audience_names_the_line_of_the_problem(tmp_path: Path) -> None:
    text = GOOD.replace(
        "audience: stage in [at_risk, churned] and clv >= 20",
        "audience: |\n  stage in [at_risk, churned]\n  and clvv >= 20",
    )
    path = write(tmp_path, text)

    error = error_of(path)

    assert error.line == 7
    assert "unknown field 'clvv'" in str(error)


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("  count: 6", "  count: [6"))

    error = error_of(path)

    assert str(error).startswith(f"{path}:")
    assert "not valid YAML" in str(error)
    assert error.line is not None and error.line >= 8


def test_the_name_must_match_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, name="other")

    error = error_of(path)

    assert str(error) == (
        f"{path}:1: name: 'promo' differs from the file name 'other.yaml'"
    )


def test_a_missing_template_is_found_at_validate_time(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("template: winback", "template: winbak"))
    loaded = load_campaign(path)

    problems = check_campaign(loaded, TEMPLATES)

    assert len(problems) == 1
    assert problems[0].startswith(f"{path}:11: template: no template named 'winbak'")


def test_a_broken_subject_template_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("first_name or 'there' }}", "first_name "))
    loaded = load_campaign(path)

    problems = check_campaign(loaded, TEMPLATES)

    assert problems and problems[0].startswith(f"{path}:14: ")


def test_delay_and_dedupe_belong_to_events(tmp_path: Path) -> None:
    text = GOOD.replace('"0 10 * * mon"', '"0 10 * * mon"\n  delay: 4h')
    error = error_of(write(tmp_path, text))

    assert error.line == 4
    assert "delay and dedupe apply to event triggers only" in str(error)


def test_a_send_window_inside_quiet_hours_leaves_no_time(tmp_path: Path) -> None:
    text = GOOD + 'quiet_hours: "08:00-22:00"\nsend_window:\n  hours: "09:00-17:00"\n'
    error = error_of(write(tmp_path, text))

    assert "leave no time to send" in str(error)


def test_unknown_campaign_names_are_refused(tmp_path: Path) -> None:
    write(tmp_path, GOOD)

    with pytest.raises(Exception, match="no campaign named nope"):
        load_campaigns(tmp_path, ["nope"])


def test_durations() -> None:
    assert parse_duration("4h").total_seconds() == 4 * 3600
    assert parse_duration("2d").days == 2
    assert parse_duration("1w").days == 7
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("soon")
