"""Read a CloudFormation template with its short-form intrinsics (!Ref, !Sub, ...) kept as plain values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _CloudFormationLoader(yaml.SafeLoader):
    pass


_CloudFormationLoader.add_multi_constructor(
    "!", lambda loader, suffix, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else None
)


def load_template(path: Path) -> dict[str, Any]:
    return dict(yaml.load(path.read_text(), Loader=_CloudFormationLoader))  # noqa: S506 - a SafeLoader
