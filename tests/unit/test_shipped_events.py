"""The files under events/ match template.yaml: the API event carries the template's route, stage and an IAM caller,
and the `sam local invoke --env-vars` file sets exactly the variables the template declares (SAM passes no others)."""

from __future__ import annotations

import json
from typing import Any

from rotator_sandbox.cfn_yaml import load_template
from rotator_sandbox.paths import EVENTS_DIR, ROOT


def template() -> dict[str, Any]:
    return load_template(ROOT / "template.yaml")


def test_api_event_has_the_templates_route_stage_and_an_iam_caller():
    resources = template()["Resources"]
    route = resources["RotatorFunction"]["Properties"]["Events"]["Rotations"]["Properties"]
    stage = resources["RotatorApi"]["Properties"]["StageName"]
    assert resources["RotatorApi"]["Properties"]["Auth"]["DefaultAuthorizer"] == "AWS_IAM"
    event = json.loads((EVENTS_DIR / "api-post-rotations.json").read_text())
    assert (event["httpMethod"], event["path"], event["resource"]) == (route["Method"], route["Path"], route["Path"])
    context = event["requestContext"]
    assert (context["stage"], context["path"]) == (stage, f"/{stage}{route['Path']}")
    identity = context["identity"]
    assert identity["userArn"].startswith("arn:aws:sts::") and identity["accessKey"] and identity["caller"]


def test_local_env_file_sets_every_variable_the_template_declares():
    declared = template()["Resources"]["RotatorFunction"]["Properties"]["Environment"]["Variables"]
    local = json.loads((EVENTS_DIR / "local-env.json").read_text())
    assert set(local) == {"RotatorFunction"}
    assert set(local["RotatorFunction"]) == set(declared)
    assert local["RotatorFunction"]["DRY_RUN"] == "true"  # a first local run against a real stack changes nothing
