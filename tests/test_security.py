"""Security: Kafka TLS/SASL from settings with secrets kept out of sight, no pickle, a web
server on loopback whose table routes are off."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from streamapp.application import create_app
from streamapp.edges.clients import connection
from streamapp.settings import Settings, SettingsError
from tests.conftest import StartWorker

ROOT = Path(__file__).resolve().parent.parent


def ca_file(tmp_path: Path) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=streamapp-test-ca", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert


def test_sasl_ssl_scram_client_configuration_comes_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-from-a-file\n")
    env = {"STREAMAPP_BROKER": "kafka://k1.example:9093,kafka://k2.example:9093",
           "STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
           "STREAMAPP_SASL_MECHANISM": "SCRAM-SHA-256",
           "STREAMAPP_SASL_USERNAME": "streamapp",
           "STREAMAPP_SASL_PASSWORD_FILE": str(secret),
           "STREAMAPP_SSL_CAFILE": str(ca_file(tmp_path)),
           "STREAMAPP_STORE": "memory"}
    settings = Settings.from_env(env)
    # What the worker's consumer and producer are built with (Faust's own translation).
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    app = create_app(settings)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_username"] == "streamapp"
    assert auth["sasl_plain_password"] == "s3cr3t-from-a-file"
    context = auth["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "streamapp-test-ca"),),)]
    # The command-line clients connect the same way.
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = connection(settings.broker)
    assert client["bootstrap_servers"] == "k1.example:9093,k2.example:9093"
    assert client["sasl_plain_password"] == "s3cr3t-from-a-file"
    assert client["security_protocol"] == "SASL_SSL"


def test_secrets_never_show_in_settings_or_errors() -> None:
    settings = Settings.from_env({"STREAMAPP_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                                  "STREAMAPP_SASL_USERNAME": "u",
                                  "STREAMAPP_SASL_PASSWORD": "hunter2-secret"})
    assert "hunter2-secret" not in repr(settings) + str(settings)
    assert settings.sasl_password_value() == "hunter2-secret"
    with pytest.raises(SettingsError) as error:
        Settings.from_env({"STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL",
                           "STREAMAPP_SASL_PASSWORD": "hunter2-secret"})
    assert "needs STREAMAPP_SASL_USERNAME" in str(error.value)
    assert "hunter2-secret" not in str(error.value)


@pytest.mark.parametrize(("env", "message"), [
    ({"STREAMAPP_SECURITY_PROTOCOL": "SASL_SSL", "STREAMAPP_SASL_USERNAME": "u"},
     "needs one of STREAMAPP_SASL_PASSWORD or STREAMAPP_SASL_PASSWORD_FILE"),
    ({"STREAMAPP_SSL_CAFILE": "/no/such/ca.pem"}, "STREAMAPP_SSL_CAFILE: no such file"),
    ({"STREAMAPP_SECURITY_PROTOCOL": "KERBEROS"}, "STREAMAPP_SECURITY_PROTOCOL='KERBEROS'"),
])
def test_incomplete_security_settings_are_explained(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env(env)


def test_no_pickle_and_torch_load_only_with_weights_only() -> None:
    for source in (ROOT / "streamapp").rglob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", text, re.M), \
            source
        for call in re.findall(r"torch\.load\((.*?)\)", text, re.S):
            assert "weights_only=True" in call, f"{source}: torch.load({call})"


@pytest.mark.integration
def test_web_server_listens_on_loopback_only_and_serves_no_table_contents(
    start_worker: StartWorker,
) -> None:
    worker = start_worker()
    assert worker.proc is not None
    listening = [c.laddr for c in psutil.Process(worker.proc.pid).net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == worker.web_port]
    assert listening and all(addr.ip == "127.0.0.1" for addr in listening), listening
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/table/totals/", timeout=5)
    assert error.value.code == 404
    assert worker.stats()["assigned_partitions"]  # the worker's own view still answers
