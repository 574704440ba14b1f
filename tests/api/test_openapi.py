"""openapi.yaml is the contract: it must be exactly what the application serves."""

from __future__ import annotations

from pathlib import Path

import yaml

from scripts.generate_openapi import render, served_openapi


def test_openapi_yaml_matches_the_served_document(project_root: Path) -> None:
    committed = (project_root / "openapi.yaml").read_text()
    served = render(served_openapi())
    assert yaml.safe_load(committed) == yaml.safe_load(served), "run `make openapi`"


def test_every_error_response_is_a_problem_document(project_root: Path) -> None:
    spec = yaml.safe_load((project_root / "openapi.yaml").read_text())
    for path, operations in spec["paths"].items():
        if path.startswith("/csc/"):
            continue  # the CSC API answers {"error", "error_description"}, as its spec says
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and int(status) != 422:
                    assert "application/problem+json" in response["content"], (method, path, status)
