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


# The contract's calls without an API key; the device calls are signed by the device instead.
KEYLESS = {
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/ca/certificates"),
    ("get", "/v1/ca/crl"),
    ("get", "/v1/ca/issuer.cer"),
    ("get", "/v1/ca/root.cer"),
    ("get", "/v1/ca/root.crl"),
    ("post", "/v1/ca/ocsp"),
    ("get", "/v1/ca/ocsp/{request}"),
    ("post", "/v1/tsa"),
    ("post", "/csc/v1/info"),
    ("post", "/csc/v2/info"),
    ("post", "/v1/devices"),
    ("post", "/v1/devices/{device_id}/activation"),
    ("get", "/v1/devices/{device_id}/messages"),
    ("delete", "/v1/devices/{device_id}"),
}
ROLES = {"signer", "portal", "agency_admin", "jdn_admin"}


def test_every_keyed_operation_declares_the_api_key_and_its_roles(project_root: Path) -> None:
    spec = yaml.safe_load((project_root / "openapi.yaml").read_text())
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["apiKey"]["description"],
    }
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if (method, path) in KEYLESS:
                assert "security" not in operation, (method, path)
                continue
            [requirement] = operation["security"]
            roles = set(requirement["apiKey"])
            assert roles and roles <= ROLES, (method, path, roles)
            if path.startswith(("/v1/signing-requests", "/v1/signatures", "/csc/")):
                assert roles == {"signer"}, (method, path, roles)


def test_every_link_names_an_operation_and_one_of_its_path_parameters(project_root: Path) -> None:
    spec = yaml.safe_load((project_root / "openapi.yaml").read_text())
    operations = {
        operation["operationId"]: operation
        for path_item in spec["paths"].values()
        for operation in path_item.values()
    }
    links = [
        link
        for operation in operations.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 8  # signing request, application and device follow-ups
    for link in links:
        target = operations[link["operationId"]]
        path_parameters = {p["name"] for p in target["parameters"] if p["in"] == "path"}
        assert set(link["parameters"]) <= path_parameters, link
