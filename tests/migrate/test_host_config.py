"""host.toml: the generated files validate against the schema and load with load_host_config; bad files give errors
naming the file and the key; the loader and the schema agree."""

from __future__ import annotations

import copy
import tomllib

import jsonschema
import pytest

from wcfrelay.migrate import (
    MigrationError,
    endpoints_from_app_config,
    load_host_config,
    parse_host_config,
    plan_migration,
    render_host_toml,
)

from . import CONFIGS, HOST_SCHEMA, SAMPLE, config

VALIDATOR = jsonschema.Draft202012Validator(HOST_SCHEMA)
HOST_FIELDS = ("path", "layer", "binding", "client_auth", "discovery", "display_name", "max_message", "service",
               "contract", "name", "key_name", "wcf_binding")
GOOD = sorted(p.name for p in CONFIGS.glob("*.config") if not p.name.startswith(("broken", "relay-")))


def test_schema_is_valid():
    jsonschema.Draft202012Validator.check_schema(HOST_SCHEMA)


@pytest.mark.parametrize("name", [*GOOD, "SAMPLE"])
def test_generated_host_config_validates_and_loads(tmp_path, name):
    source = SAMPLE if name == "SAMPLE" else config(name)
    plan = plan_migration(source)
    path = tmp_path / "host.toml"
    path.write_text(render_host_toml(plan), encoding="utf-8")
    data = tomllib.loads(path.read_text())
    VALIDATOR.validate(data)
    loaded = load_host_config(path)
    # The host sees the same endpoints, with the same host fields, whether from host.toml or from the app.config.
    direct = endpoints_from_app_config(source)
    assert [tuple(getattr(e, f) for f in HOST_FIELDS) for e in loaded.endpoints] == \
        [tuple(getattr(e, f) for f in HOST_FIELDS) for e in direct]
    assert loaded.source == str(source)


def test_loaded_sample_host_config(tmp_path):
    path = tmp_path / "host.toml"
    path.write_text(render_host_toml(plan_migration(SAMPLE)))
    host = load_host_config(path)
    assert host.endpoint == "http://127.0.0.1:9351/"
    assert host.connection_string_env == "WCFRELAY_CONNECTION_STRING"
    assert host.connection_string({"WCFRELAY_CONNECTION_STRING": "Endpoint=sb://x/"}) == "Endpoint=sb://x/"
    assert [e.path for e in host.legacy] == ["calculator", "calculator/ws", "calculator/log", "calculator/events"]
    assert [e.path for e in host.hybrid] == ["calculator-tcp"]
    basic = host.endpoints[0]
    assert basic.registration().display_name == "Calculator (BasicHttp)"


BASE = {
    "version": 1,
    "host": {"endpoint": "sb://gw.example.com/"},
    "endpoints": [
        {"path": "calc", "layer": "legacy", "binding": "basicHttp"},
        {"path": "events", "layer": "legacy", "binding": "netEvent", "max_message": 65536, "client_auth": "none"},
        {"path": "tcp", "layer": "hybrid", "binding": "hybridConnection"},
    ],
}


def mutate(change) -> dict:
    data = copy.deepcopy(BASE)
    change(data)
    return data


BAD = {
    "unknown top key": (lambda d: d.update(versoin=1), "versoin: unknown key (did you mean 'version'?)"),
    "unknown endpoint key": (lambda d: d["endpoints"][0].update(bindng="x"),
                             "endpoints[0].bindng: unknown key (did you mean 'binding'?)"),
    "unknown host key": (lambda d: d["host"].update(url="x"), "host.url: unknown key"),
    "wrong version": (lambda d: d.update(version=2), "version: must be 1, got 2"),
    "version missing": (lambda d: d.pop("version"), "version: is required"),
    "layer value": (lambda d: d["endpoints"][0].update(layer="modern"), "endpoints[0].layer: must be one of"),
    "binding for legacy": (lambda d: d["endpoints"][0].update(binding="netTcp"),
                           "endpoints[0].binding: a legacy-layer endpoint's binding must be one of"),
    "binding for hybrid": (lambda d: d["endpoints"][2].update(binding="basicHttp"),
                           "endpoints[2].binding: a hybrid endpoint's binding must be 'hybridConnection'"),
    "path missing": (lambda d: d["endpoints"][0].pop("path"), "endpoints[0].path: is required"),
    "path type": (lambda d: d["endpoints"][0].update(path=5), "endpoints[0].path: must be a string, got integer"),
    "path segments": (lambda d: d["endpoints"][0].update(path="a/../b"), "endpoints[0].path:"),
    "client_auth": (lambda d: d["endpoints"][0].update(client_auth="None"), "endpoints[0].client_auth: must be one of"),
    "discovery": (lambda d: d["endpoints"][0].update(discovery=True),
                  "endpoints[0].discovery: must be one of 'private', 'public', got boolean"),
    "hybrid public": (lambda d: d["endpoints"][2].update(discovery="public"), "endpoints[2].discovery:"),
    "one-way too large": (lambda d: d["endpoints"][1].update(max_message=65537),
                          "endpoints[1].max_message: must be an integer between 1 and 65536"),
    "size type": (lambda d: d["endpoints"][0].update(max_message="1MB"),
                  "endpoints[0].max_message: must be an integer between 1 and 16777216 (bytes), got string"),
    "size bool": (lambda d: d["endpoints"][0].update(max_message=True), "endpoints[0].max_message:"),
    "display too long": (lambda d: d["endpoints"][0].update(display_name="x" * 257), "endpoints[0].display_name:"),
    "key name": (lambda d: d["endpoints"][0].update(key_name="bad name"), "endpoints[0].key_name:"),
    "endpoint url": (lambda d: d["host"].update(endpoint="ftp://x/"), "host.endpoint: must look like"),
    "env name": (lambda d: d["host"].update(connection_string_env="1-bad"), "host.connection_string_env:"),
    "endpoints type": (lambda d: d.update(endpoints={"path": "x"}), "endpoints: must be an array"),
    "endpoint type": (lambda d: d["endpoints"].append("calc"), "endpoints[3]: must be a table"),
    "empty service": (lambda d: d["endpoints"][0].update(service="  "), "endpoints[0].service: must not be empty"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_bad_host_config_names_file_and_key(tmp_path, case):
    change, expected = BAD[case]
    data = mutate(change)
    with pytest.raises(MigrationError) as info:
        parse_host_config(data, "host.toml")
    assert f"host.toml: {expected}" in str(info.value)
    # The schema refuses it too (duplicate paths are the loader's alone).
    assert not VALIDATOR.is_valid(data), case


def test_the_base_document_is_valid():
    VALIDATOR.validate(BASE)
    host = parse_host_config(BASE)
    assert [e.layer for e in host.endpoints] == ["legacy", "legacy", "hybrid"]
    assert host.endpoints[1].client_auth == "none" and host.endpoints[1].max_message == 65536


def test_duplicate_paths_ignoring_case():
    data = mutate(lambda d: d["endpoints"].append({"path": "CALC", "layer": "legacy", "binding": "webHttp"}))
    with pytest.raises(MigrationError) as info:
        parse_host_config(data, "host.toml")
    assert "host.toml: endpoints[3].path: 'CALC' is already used by endpoints[0]" in str(info.value)


def test_every_problem_is_reported_at_once():
    data = mutate(lambda d: (d["endpoints"][0].update(layer="x"), d["endpoints"][1].update(client_auth="y")))
    with pytest.raises(MigrationError) as info:
        parse_host_config(data, "host.toml")
    assert len(info.value.problems) == 2


def test_file_errors(tmp_path):
    with pytest.raises(MigrationError, match="file not found"):
        load_host_config(tmp_path / "missing.toml")
    bad = tmp_path / "host.toml"
    bad.write_text('version = 1\n[[endpoints]]\npath = "a\n')
    with pytest.raises(MigrationError) as info:
        load_host_config(bad)
    assert str(info.value).startswith(f"{bad}: line 3: ") and "TOML syntax error" in str(info.value)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b'version = 1\nsource = "\xff"\n')
    with pytest.raises(MigrationError, match="line 2: not valid UTF-8"):
        load_host_config(binary)
