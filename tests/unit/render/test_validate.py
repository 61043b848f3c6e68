"""Validation: each bad template gives one line naming its file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nudge.render import (
    Renderer,
    TemplateError,
    fixture_request,
    validate_subject,
    validate_template,
)

REPO = Path(__file__).resolve().parents[3]
TEMPLATES = REPO / "email_templates"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the shipped templates that a test may break."""
    copy = tmp_path / "email_templates"
    shutil.copytree(TEMPLATES, copy)
    return copy


def break_file(root: Path, rel: str, old: str, new: str) -> tuple[Path, int]:
    """Replace text in a template file; return the file and the changed line."""
    path = root / rel
    source = path.read_text()
    assert old in source, old
    line = source[: source.index(old)].count("\n") + 1
    path.write_text(source.replace(old, new, 1))
    return path, line


@pytest.mark.parametrize("name", ["winback", "picked_for_you", "cart_abandonment"])
def test_shipped_templates_are_valid(name: str) -> None:
    assert validate_template(TEMPLATES, name, variants=("a", "b")) == []


CASES = {
    "per-customer syntax error": (
        "winback/body.mjml.j2",
        "{{ recipient.first_name }}{% endif %}</mj-text>",
        "{{ recipient.first_name }{% endif %}</mj-text>",
        "syntax error",
    ),
    "compile-stage syntax error": (
        "_partials/header.mjml.j2",
        "<mj-column>",
        "<mj-column>[% if %]",
        "syntax error",
    ),
    "unknown variable": (
        "winback/body.mjml.j2",
        "visit to {{ shop.name }}",
        "visit to {{ shop_name }}",
        "'shop_name' is undefined",
    ),
    "unknown attribute in a partial": (
        "_partials/product_card.mjml.j2",
        "{{ item.reason }}",
        "{{ item.reasons }}",
        "has no attribute 'reasons'",
    ),
    "unguarded optional field": (
        "_partials/footer.mjml.j2",
        "{{ shop.postal_address }}",
        "{{ offer.code }}",
        "'None' has no attribute 'code'",
    ),
    "unknown variable in the text part": (
        "_partials/product_card.txt.j2",
        "{{ item.reason }}",
        "{{ reason }}",
        "'reason' is undefined",
    ),
    "unclosed MJML element": (
        "winback/body.mjml.j2",
        '    <mj-section padding="8px 0 20px">',
        '    <mj-section padding="8px 0 20px"><mj-section>',
        "<mj-section> is not closed",
    ),
    "unknown MJML element": (
        "_partials/product_card.mjml.j2",
        "<mj-button ",
        "<mj-buton ",
        "unknown element <mj-buton>",
    ),
    "bare < in MJML text": (
        "winback/body.mjml.j2",
        "A lot has changed",
        "A lot < has changed",
        "bare '<'",
    ),
    "image without alt text": (
        "_partials/product_card.mjml.j2",
        'alt="{{ item.title }}" ',
        "",
        "image without alt text",
    ),
    "link without tags": (
        "winback/body.mjml.j2",
        "visit to {{ shop.name }}",
        'visit to <a href="https://demo-shop.example/sale">the sale</a>',
        "carries no UTM tags",
    ),
    "missing partial": (
        "_layouts/base.mjml.j2",
        '[% include "_partials/footer.mjml.j2" %]',
        '[% include "_partials/foot.mjml.j2" %]',
        "template not found: _partials/foot.mjml.j2",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_template_gives_one_line(root: Path, case: str) -> None:
    rel, old, new, reason = CASES[case]
    path, line = break_file(root, rel, old, new)

    problems = validate_template(root, "winback")

    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}:{line}: "), problems[0]
    assert reason in problems[0]
    assert "\n" not in problems[0]


def test_long_subject_is_caught_once_rendered(root: Path) -> None:
    words = " and".join(" {{ shop.name }} is lovely" for _ in range(8))
    path, line = break_file(root, "winback/subject.txt.j2", "missed you", words)

    problems = validate_template(root, "winback")

    assert problems == [
        f"{path}:{line}: subject is 223 characters once rendered (at most 200)"
    ]


def test_the_renderer_refuses_what_validation_reports(root: Path) -> None:
    path, line = break_file(root, "winback/body.mjml.j2", "<mj-column>", "<mj-x>")
    break_file(root, "winback/body.mjml.j2", "</mj-column>", "")

    with pytest.raises(TemplateError) as caught:
        Renderer(root, signing_secret="s").render(fixture_request("winback"))

    assert caught.value.file == str(path)
    assert caught.value.line == line


def test_missing_files_and_folders(root: Path) -> None:
    (root / "winback" / "body.txt.j2").unlink()

    assert validate_template(root, "winback") == [
        f"{root / 'winback' / 'body.txt.j2'}: file is missing"
    ]
    assert validate_template(root, "nope") == [
        f"{root / 'nope'}: no such template folder"
    ]


def test_variant_subjects_from_campaign_config() -> None:
    where = "config/campaigns/winback.yaml"

    assert validate_subject("Hi {{ recipient.first_name }}", file=where, line=7) == []
    assert validate_subject("{{ recipient.name }}", file=where, line=7) == [
        f"{where}:7: unknown variable or attribute: "
        "'dict object' has no attribute 'name'"
    ]
    assert validate_subject("Hi\n{{ x", file=where, line=7)[0].startswith(
        f"{where}:8: "
    )
    assert validate_subject("y" * 201, file=where, line=7) == [
        f"{where}:7: subject is 201 characters once rendered (at most 200)"
    ]
