"""API keys (read-write, read-only) over TLS: who may call what, health open, keys never logged."""

from __future__ import annotations

import shutil
import subprocess
import sys

import grpc
import pytest

from service.client import AuthError, TribindClient, Unavailable
from service.client_types import CaseInput, text_item
from test_service_harness import REPO_ROOT, ServerProcess, reap_servers  # noqa: F401 (autouse: no server outlives its module)

RW_KEY = "rw-3f9c2b7e1d"
RO_KEY = "ro-8a6d4c2f0e"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed; it makes the test certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True,
    )
    return folder / "cert.pem", folder / "key.pem"


@pytest.fixture(scope="module")
def server(tmp_path_factory, certificate):
    cert, key = certificate
    folder = tmp_path_factory.mktemp("auth")
    (folder / "ro-keys").write_text(f"# read-only\n{RO_KEY}\n")
    proc = ServerProcess(folder / "data", "--tls-cert", str(cert), "--tls-key", str(key),
                         "--read-only-keys-file", str(folder / "ro-keys"), "--log-level", "INFO",
                         seed_cases=2, env={"TRIBIND_SERVER_API_KEYS": RW_KEY}).start()
    yield proc
    assert proc.terminate() == 0


def _client(server, certificate, key):
    return TribindClient(server.target, key, root_certificates=certificate[0], retries=0)


def test_health_is_open_without_a_key(server, certificate):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    credentials = grpc.ssl_channel_credentials(certificate[0].read_bytes())
    with grpc.secure_channel(server.target, credentials) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="tribind.v1.Tribind"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("key, code", [(None, "UNAUTHENTICATED"), ("wrong-key", "UNAUTHENTICATED"),
                                       (RW_KEY[:-1], "UNAUTHENTICATED")])
def test_missing_or_wrong_key_is_unauthenticated(server, certificate, key, code):
    with _client(server, certificate, key) as client:
        with pytest.raises(AuthError) as info:
            client.stats()
    assert info.value.code.name == code
    assert "API key" in info.value.message


def test_read_only_key_reads_but_cannot_write(server, certificate):
    with _client(server, certificate, RO_KEY) as client:
        assert client.stats().cases == 2
        assert client.search(text_item("effusion"), k=2).hits
        for write in (lambda: client.upsert([CaseInput("auth-ro", "p", report="x")]),
                      lambda: client.delete(["ph0-000000"]),
                      lambda: list(client.reindex())):
            with pytest.raises(AuthError) as info:
                write()
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
            assert "read-write" in info.value.message
        assert client.stats().cases == 2


def test_read_write_key_writes(server, certificate):
    with _client(server, certificate, RW_KEY) as client:
        client.upsert([CaseInput("auth-rw", "p", report="Small right effusion.")])
        assert client.get_case("auth-rw").report == ""  # media only on request
        assert client.get_case("auth-rw", include_media=True).report == "Small right effusion."
        assert client.delete(["auth-rw"]) == 1


def test_plaintext_client_cannot_talk_to_a_tls_server(server):
    with TribindClient(server.target, RW_KEY, retries=0, timeout_s=5) as client:
        with pytest.raises(Unavailable):
            client.stats()


def test_cli_with_key_and_ca(server, certificate):
    run = subprocess.run(
        [sys.executable, "-m", "tribind", "stats", "--server", server.target, "--api-key", RO_KEY,
         "--tls-ca", str(certificate[0]), "--json"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert '"cases": 2' in run.stdout
    denied = subprocess.run(
        [sys.executable, "-m", "tribind", "delete", "ph0-000000", "--server", server.target, "--api-key", RO_KEY,
         "--tls-ca", str(certificate[0])], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr and "Traceback" not in denied.stderr


def test_keys_never_reach_the_logs(server, certificate):
    with _client(server, certificate, "guess-" + RW_KEY) as client:
        with pytest.raises(AuthError):
            client.stats()
    logs = "".join(server.stdout + server.stderr)
    assert "rejected Stats" in logs  # the log is written, without the key
    assert RW_KEY not in logs and RO_KEY not in logs
