"""Check request bodies against an ESP's published OpenAPI spec.

Klaviyo publishes OpenAPI 3.0 (``nullable`` marks nulls), Mailchimp OpenAPI 3.1
(JSON Schema 2020-12): each is checked with the matching validator of
``openapi-schema-validator`` (a development dependency). Mailchimp's spec has
two known false alarms for bodies its own SDK sends (see ``MAILCHIMP_FALSE_ALARMS``);
they are recognised one by one, by the exact error and body, and reported apart,
never by turning a check off.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

URN = "urn:nudge:spec"


@dataclass(frozen=True)
class Problem:
    """One way a request body breaks the spec."""

    method: str
    path: str
    template: str
    where: str
    message: str

    def __str__(self) -> str:
        where = f"{self.method} {self.path} ({self.template}) at {self.where}"
        return f"{where}: {self.message}"


FalseAlarm = Callable[[str, str, Any, Any], bool]


def _member_put_both_statuses(method: str, template: str, body: Any, err: Any) -> bool:
    # A PUT with both "status" and "status_if_new" satisfies both `oneOf`
    # branches (each only lists required keys), which `oneOf` forbids.
    return (
        method == "PUT"
        and template.endswith("/members/{subscriber_hash}")
        and err.validator == "oneOf"
        and not list(err.absolute_path)
        and isinstance(body, dict)
        and "status" in body
        and "status_if_new" in body
    )


def _member_patch_archived(method: str, template: str, body: Any, err: Any) -> bool:
    # "archived" is a status the API accepts but the PATCH enum leaves out.
    return (
        method == "PATCH"
        and template.endswith("/members/{subscriber_hash}")
        and err.validator == "enum"
        and list(err.absolute_path) == ["status"]
        and err.instance == "archived"
    )


MAILCHIMP_FALSE_ALARMS: dict[str, FalseAlarm] = {
    "member PUT with status and status_if_new matches both oneOf branches": (
        _member_put_both_statuses
    ),
    'member PATCH status "archived" missing from the enum': _member_patch_archived,
}


class ApiSpec:
    """An OpenAPI document that checks request bodies by method and path."""

    def __init__(
        self,
        path: Path | str,
        *,
        false_alarms: dict[str, FalseAlarm] | None = None,
    ) -> None:
        from openapi_schema_validator import OAS30Validator, OAS31Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4, DRAFT202012

        self.document = json.loads(Path(path).read_text(encoding="utf-8"))
        self.version = str(self.document["openapi"])
        modern = self.version.startswith("3.1")
        resource = Resource.from_contents(
            self.document, default_specification=DRAFT202012 if modern else DRAFT4
        )
        self._registry = Registry().with_resource(URN, resource)
        self._validator_class: Any = OAS31Validator if modern else OAS30Validator
        self.false_alarms = false_alarms or {}
        self.ignored: list[tuple[str, Problem]] = []
        self._paths = [
            (
                re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "/?$"),
                template,
            )
            for template in self.document["paths"]
        ]
        self._validators: dict[tuple[str, str, str], Any] = {}

    def template(self, path: str) -> str | None:
        """Return the spec's path template that a concrete path matches."""
        exact = [t for regex, t in self._paths if regex.match(path)]
        # Prefer the template with the fewest parameters ("/lists/{id}/segments"
        # over a looser match).
        return min(exact, key=lambda t: t.count("{")) if exact else None

    def _validator(self, method: str, template: str) -> tuple[Any, str] | None:
        operation = self.document["paths"][template].get(method.lower())
        if operation is None or "requestBody" not in operation:
            return None
        content = operation["requestBody"]["content"]
        media = next(iter(content))
        key = (method, template, media)
        if key not in self._validators:
            pointer = "/".join(
                part.replace("~", "~0").replace("/", "~1")
                for part in ("paths", template, method.lower(), "requestBody")
            )
            media_part = media.replace("~", "~0").replace("/", "~1")
            ref = f"{URN}#/{pointer}/content/{media_part}/schema"
            self._validators[key] = self._validator_class(
                {"$ref": ref}, registry=self._registry
            )
        return self._validators[key], media

    def problems(self, method: str, path: str, body: Any) -> list[Problem]:
        """Return how a request body breaks the spec (an empty list when it fits)."""
        template = self.template(path)
        if template is None:
            return [Problem(method, path, "?", "path", "no such path in the spec")]
        found = self._validator(method, template)
        if found is None:
            if body in (None, b"", ""):
                return []
            return [
                Problem(method, path, template, "body", "the spec takes no body here")
            ]
        validator, _ = found
        problems = []
        for err in validator.iter_errors(body):
            where = "/" + "/".join(str(p) for p in err.absolute_path)
            problem = Problem(method, path, template, where, err.message)
            alarm = next(
                (
                    name
                    for name, test in self.false_alarms.items()
                    if test(method, template, body, err)
                ),
                None,
            )
            if alarm is not None:
                self.ignored.append((alarm, problem))
            else:
                problems.append(problem)
        return problems

    def check_all(self, requests: Iterable[tuple[str, str, Any]]) -> list[Problem]:
        """Return the problems of many (method, path, body) requests."""
        found: list[Problem] = []
        for method, path, body in requests:
            found.extend(self.problems(method, path, body))
        return found
