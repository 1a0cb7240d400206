"""Broken inputs give clear errors naming the file, the element and the line; hostile XML is refused."""

from __future__ import annotations

import pytest

from hybrid.errors import ConfigError
from wcfrelay.migrate import MigrationError, plan_migration
from wcfrelay.migrate.appconfig import read_app_config

from . import config, keys_in, line_of


def fail(name: str) -> MigrationError:
    with pytest.raises(MigrationError) as info:
        plan_migration(config(name))
    return info.value


def only(error: MigrationError):
    assert len(error.problems) == 1, str(error)
    return error.problems[0]


def test_migration_error_is_a_config_error():
    assert issubclass(MigrationError, ConfigError)


def test_malformed_xml_names_the_parser_line():
    path = config("broken_malformed.config")
    problem = only(fail("broken_malformed.config"))
    # The endpoint opened on line 6 is never closed; libxml2 notices at </service>.
    assert problem.line == line_of(path, "</service>")
    assert "malformed XML" in problem.message
    assert "endpoint" in problem.message and f"line {line_of(path, '<endpoint name=')}" in problem.message
    assert str(problem).startswith(f"{path}: line {problem.line}: ")


def test_unknown_binding_element_is_named_with_its_line_and_a_suggestion():
    path = config("broken_unknown_binding_element.config")
    problem = only(fail("broken_unknown_binding_element.config"))
    assert problem.line == line_of(path, "<netTcpRelayBindng>")
    assert problem.element == "<netTcpRelayBindng>"
    assert "unknown binding element" in problem.message
    assert "did you mean <netTcpRelayBinding>" in problem.message


def test_unknown_binding_on_an_endpoint():
    path = config("broken_unknown_endpoint_binding.config")
    problem = only(fail("broken_unknown_endpoint_binding.config"))
    assert problem.line == line_of(path, 'name="typo"')
    assert problem.element == '<endpoint name="typo">'
    assert "unknown binding 'netTcpRelayBindng'" in problem.message
    assert "did you mean 'netTcpRelayBinding'" in problem.message


def test_sas_behavior_without_its_key():
    path = config("broken_missing_key.config")
    problem = only(fail("broken_missing_key.config"))
    assert problem.line == line_of(path, "<sharedAccessSignature")
    assert problem.element == '<sharedAccessSignature keyName="half-configured">'
    assert "no key" in problem.message


def test_behavior_names_that_do_not_exist_endpoint_and_service():
    path = config("broken_missing_behavior.config")
    error = fail("broken_missing_behavior.config")
    by_line = {p.line: p for p in error.problems}
    assert set(by_line) == {line_of(path, 'behaviorConfiguration="nosuchServiceBehavior"'),
                            line_of(path, '<endpoint name="a"')}
    service = by_line[line_of(path, 'behaviorConfiguration="nosuchServiceBehavior"')]
    assert service.element == '<service name="Broken.Service">'
    assert "behaviorConfiguration='nosuchServiceBehavior' does not exist" in service.message
    assert "'debug'" in service.message
    # The line is where the start tag begins, not the line of the attribute (libxml2 would say where it ends).
    assert line_of(path, 'behaviorConfiguration="lisen"') == line_of(path, '<endpoint name="a"') + 1
    endpoint = by_line[line_of(path, '<endpoint name="a"')]
    assert endpoint.element == '<endpoint name="a">'
    assert "behaviorConfiguration='lisen' does not exist" in endpoint.message and "'listen'" in endpoint.message


def test_binding_configuration_that_does_not_exist():
    path = config("broken_missing_binding_configuration.config")
    problem = only(fail("broken_missing_binding_configuration.config"))
    assert problem.line == line_of(path, '<endpoint name="a"')
    assert problem.element == '<endpoint name="a">'
    assert "bindingConfiguration='large' does not exist" in problem.message
    assert "defines 'small'" in problem.message


@pytest.mark.parametrize("name", ["broken_doctype.config", "broken_entity_bomb.config"])
def test_doctype_and_entities_are_refused_before_parsing(name):
    path = config(name)
    problem = only(fail(name))
    assert problem.line == line_of(path, "<!DOCTYPE")
    assert "document type declarations" in problem.message
    assert "root:" not in str(problem)  # nothing from /etc/passwd


def test_doctype_in_utf16_is_refused_too(tmp_path):
    # A byte scan cannot see "<!DOCTYPE" in UTF-16; the parsed document's docinfo still shows it.
    text = ('<?xml version="1.0" encoding="utf-16"?>\n<!DOCTYPE configuration [<!ENTITY x "y">]>\n'
            '<configuration><system.serviceModel/></configuration>\n')
    path = tmp_path / "utf16.config"
    path.write_bytes(text.encode("utf-16"))
    problem = only(pytest.raises(MigrationError, plan_migration, path).value)
    assert "document type declarations" in problem.message


def test_undeclared_entity_is_malformed_xml(tmp_path):
    path = tmp_path / "entity.config"
    path.write_text('<configuration>\n<appSettings><add key="a" value="&ext;"/></appSettings>\n</configuration>\n')
    problem = only(pytest.raises(MigrationError, plan_migration, path).value)
    assert problem.line == 2 and "malformed XML" in problem.message and "ext" in problem.message


def test_relay_addresses_must_be_sb_or_http():
    path = config("broken_address.config")
    error = fail("broken_address.config")
    lines = {p.line: p.message for p in error.problems}
    assert "net.tcp://ns.servicebus.windows.net/a" in lines[line_of(path, 'name="tcp"')]
    assert "must be sb://" in lines[line_of(path, 'name="tcp"')]
    assert "relative address 'b'" in lines[line_of(path, 'name="relative"')]
    assert "names no path" in lines[line_of(path, 'name="root"')]


def test_missing_system_service_model():
    path = config("broken_no_servicemodel.config")
    problem = only(fail("broken_no_servicemodel.config"))
    assert problem.line == line_of(path, "<configuration>")
    assert problem.element == "<configuration>"
    assert "no <system.serviceModel> section" in problem.message


def test_bad_attribute_values_are_all_reported_at_once():
    path = config("broken_bad_values.config")
    error = fail("broken_bad_values.config")
    messages = "\n".join(str(p) for p in error.problems)
    assert f"line {line_of(path, 'connectionMode=')}: <binding name=\"odd\">: connectionMode='Direct'" in messages
    assert "maxReceivedMessageSize='-5' must be a positive number of bytes" in messages
    assert f"line {line_of(path, '<security mode=')}: <security>: mode='Everything'" in messages
    assert f"line {line_of(path, 'discoveryMode=')}: <serviceRegistrySettings>: discoveryMode='Everyone'" in messages


def test_a_key_the_gateway_cannot_use_is_refused_without_echoing_it():
    path = config("broken_short_key.config")
    problem = only(fail("broken_short_key.config"))
    assert problem.line == line_of(path, "<sharedAccessSignature")
    assert "key cannot be used by the gateway" in problem.message
    assert "tooshort-x9" not in str(problem)


def test_paths_used_twice_across_layers():
    path = config("broken_path_conflict.config")
    problem = only(fail("broken_path_conflict.config"))
    assert problem.line == line_of(path, 'name="tcp"')
    assert "already used by" in problem.message


def test_errors_never_show_keys(tmp_path):
    # A behavior missing its keyName but holding a key: the message names the element, not the key.
    path = tmp_path / "app.config"
    path.write_text(
        '<configuration><system.serviceModel><behaviors><endpointBehaviors><behavior name="b">\n'
        '<transportClientEndpointBehavior><tokenProvider>\n'
        '<sharedAccessSignature key="c2VjcmV0LWtleS10aGF0LW11c3Qtbm90LWxlYWshISE=" />\n'
        '</tokenProvider></transportClientEndpointBehavior></behavior></endpointBehaviors></behaviors>\n'
        '</system.serviceModel></configuration>\n')
    error = pytest.raises(MigrationError, plan_migration, path).value
    assert "c2VjcmV0" not in str(error)
    assert error.problems[0].line == 3 and "no keyName" in error.problems[0].message


def test_bad_connection_string_is_located_and_not_echoed(tmp_path):
    path = tmp_path / "app.config"
    path.write_text('<configuration>\n<appSettings>\n'
                    '<add key="Microsoft.ServiceBus.ConnectionString" value="Endpoint=sb://ns/;SharedAccessKey=abcdefghijklmnopq" />\n'
                    '</appSettings><system.serviceModel/></configuration>\n')
    error = pytest.raises(MigrationError, plan_migration, path).value
    problem = error.problems[0]
    assert problem.line == 3 and problem.element == '<add key="Microsoft.ServiceBus.ConnectionString">'
    assert "go together" in problem.message
    assert "abcdefghijklmnopq" not in str(error)


def test_file_level_errors(tmp_path):
    assert "file not found" in str(pytest.raises(MigrationError, plan_migration, tmp_path / "nope.config").value)
    assert "is a directory" in str(pytest.raises(MigrationError, plan_migration, tmp_path).value)
    empty = tmp_path / "empty.config"
    empty.write_text("  \n")
    assert "empty" in str(pytest.raises(MigrationError, plan_migration, empty).value)
    wrong_root = tmp_path / "root.config"
    wrong_root.write_text("<settings/>")
    assert "root element must be <configuration>" in str(pytest.raises(MigrationError, plan_migration, wrong_root).value)


def test_no_relay_endpoint_at_all(tmp_path):
    path = tmp_path / "app.config"
    path.write_text('<configuration><system.serviceModel><services><service name="S">'
                    '<endpoint address="http://localhost/s" binding="basicHttpBinding" contract="I"/>'
                    '</service></services></system.serviceModel></configuration>')
    error = pytest.raises(MigrationError, plan_migration, path).value
    assert "no relay endpoint" in str(error) and "basicHttpBinding" in str(error)


def test_config_source_must_stay_in_the_folder(tmp_path):
    path = tmp_path / "web.config"
    path.write_text('<configuration>\n<system.serviceModel>\n<bindings configSource="../outside.config"/>\n'
                    '</system.serviceModel></configuration>\n')
    problem = pytest.raises(MigrationError, read_app_config, path).value.problems[0]
    assert problem.line == 3 and problem.element == "<bindings>" and "inside the configuration file's folder" in \
        problem.message


def test_errors_in_an_included_file_name_that_file(tmp_path):
    (tmp_path / "web.config").write_text('<configuration>\n<system.serviceModel>\n'
                                         '<bindings configSource="b.config"/>\n</system.serviceModel></configuration>\n')
    (tmp_path / "b.config").write_text('<bindings>\n<netTcpRelayBinding>\n<binding name="x" connectionMode="Nope"/>\n'
                                       '</netTcpRelayBinding></bindings>\n')
    problem = pytest.raises(MigrationError, read_app_config, tmp_path / "web.config").value.problems[0]
    assert problem.source.endswith("b.config") and problem.line == 3 and "connectionMode='Nope'" in problem.message


def test_sample_keys_never_appear_in_errors():
    for name in ("broken_missing_behavior.config", "broken_missing_binding_configuration.config"):
        error = fail(name)
        for key in keys_in(config(name)):
            assert key not in str(error)
