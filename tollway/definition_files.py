"""Loading definition documents from JSON or YAML files, with errors an operator can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tollway.definitions import DefinitionError, WorkflowDefinition, parse_definition


def load_definition_file(path: Path) -> WorkflowDefinition:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DefinitionError([("(file)", f"{path} does not exist")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError([("(file)", f"cannot read {path}: {exc}")]) from None
    document: Any
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DefinitionError(
            [
                (
                    "(file)",
                    f"{path} is not valid JSON: line {exc.lineno} col {exc.colno}: {exc.msg}",
                )
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise DefinitionError([("(file)", f"{path} is not valid YAML: {exc}")]) from None
    if not isinstance(document, dict):
        raise DefinitionError([("(root)", "a definition must be an object")])
    return parse_definition(document)
