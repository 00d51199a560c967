"""TLS and SuperNode authentication for `flower-deploy` (Flower 1.42); all material is generated at test time.

Unit tests (no Flower process): the generated certificate makes a TLS handshake for 127.0.0.1 with Python's
`ssl`, node keys load with Flower's own loaders, plain HTTP is refused off loopback (the check, the engine's
deployment, the script). Deployment tests: a run over TLS with node authentication finishes, SuperNodes that
are not registered (no key, or a key nobody registered) are refused and exit, and nothing is left running.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flower_helpers import assert_nothing_left, metrics, processes_in_groups, two_node_config

from fedhello.config import dump_config
from fedhello.engines import ENGINES
from fedhello.engines.flower import deploy
from fedhello.engines.flower.deploy import CONNECTION, LocalDeployment, json_object
from fedhello.engines.flower.security import generate, generate_node_key, require_tls_off_loopback
from fedhello.errors import FedHelloError

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "deploy-local.sh"


def handshake(ca_cert: Path, cert: Path, key: Path, server_hostname: str) -> bytes:
    """A TLS handshake on 127.0.0.1 between a server with `cert` and a client trusting only `ca_cert`."""
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    client_side = ssl.create_default_context(cafile=str(ca_cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_side.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                pass  # the client refused the certificate

        server = threading.Thread(target=serve)
        server.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client_side.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                return tls.recv(2)
        finally:
            server.join(timeout=10)


def test_generated_certificate_verifies_against_the_ca_for_loopback(tmp_path):
    material = generate(tmp_path, nodes=0, hosts=["link.example.org"])
    ca = x509.load_pem_x509_certificate(material.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(material.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "link.example.org"]
    assert oct(material.server_key.stat().st_mode & 0o777) == "0o600"

    assert handshake(material.ca_cert, material.server_cert, material.server_key, "127.0.0.1") == b"ok"
    with pytest.raises(ssl.SSLCertVerificationError):  # a name the certificate does not cover
        handshake(material.ca_cert, material.server_cert, material.server_key, "10.9.8.7")
    other = generate(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):  # another CA's certificate
        handshake(material.ca_cert, other.server_cert, other.server_key, "127.0.0.1")


def test_node_keys_load_with_flowers_loaders(tmp_path):
    from flwr.cli.supernode.register import try_load_public_key  # what `flwr supernode register` runs
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    material = generate(tmp_path, nodes=2)
    assert [k.private.name for k in material.node_keys] == ["node-0", "node-1"]
    for key in material.node_keys:
        private = load_ssh_private_key(key.private.read_bytes(), None)  # what flower-supernode runs
        assert private.curve.name == "secp384r1"
        assert try_load_public_key(key.public) == public_key_to_bytes(private.public_key())
    assert material.node_keys[0].public.read_bytes() != material.node_keys[1].public.read_bytes()


@pytest.mark.parametrize("tls", [False, True])
def test_flwr_reads_the_connection_the_deployment_writes(tmp_path, monkeypatch, tls):
    from flwr.cli.config_utils import load_certificate_in_connection
    from flwr.cli.flower_config import read_superlink_connection

    deployment = LocalDeployment(1, tmp_path, tls=tls)
    deployment.port = 9092
    deployment.material = generate(tmp_path / "tls") if tls else None
    deployment.home.mkdir(parents=True)
    deployment.write_connection()
    monkeypatch.setenv("FLWR_HOME", str(deployment.home))
    connection = read_superlink_connection(CONNECTION)
    assert connection.address == "127.0.0.1:9092" and connection.insecure is not tls
    certificate = load_certificate_in_connection(connection)
    assert certificate == (deployment.material.ca_cert.read_bytes() if tls else None)


def test_json_answer_of_flwr_is_found_after_other_output():
    assert json_object('Loading...\n{\n  "success": true,\n  "node-id": "7"\n}\n') == {"success": True, "node-id": "7"}
    assert json_object("no json here") == {} and json_object("[1]") == {}


@pytest.mark.parametrize("address", ["127.0.0.1:9092", "127.0.0.9:1", "localhost:9092", "[::1]:9092", "::1"])
def test_plain_http_is_allowed_on_loopback(address):
    require_tls_off_loopback(address, tls=False)


# names that only look like loopback: a DNS name beginning with "localhost." or "127." resolves wherever its
# owner says, so only localhost itself, 127.0.0.0/8 and ::1 may go without TLS
LOOKALIKES = ["localhost.evil.example:9092", "localhost.:9092", "localhostx:1", "127.0.0.1.nip.io:9092", "::ffff:a00:1"]


@pytest.mark.parametrize(
    "address", ["10.0.0.5:9092", "0.0.0.0:9092", "link.example.org:9092", "[2001:db8::1]:1", *LOOKALIKES]
)
def test_plain_http_is_refused_off_loopback(address):
    with pytest.raises(FedHelloError) as err:
        require_tls_off_loopback(address, tls=False)
    assert "\n" not in str(err.value) and "not loopback" in str(err.value)
    assert str(err.value).endswith("(fix: set flower.tls=true)")
    require_tls_off_loopback(address, tls=True)


def test_deployment_refuses_plain_http_off_loopback_before_starting(tmp_path, monkeypatch):
    monkeypatch.setattr(deploy, "HOST", "10.0.0.5")
    deployment = LocalDeployment(1, tmp_path)
    with pytest.raises(FedHelloError, match=r"'10\.0\.0\.5:\d+' is not loopback.*fix: set flower.tls=true"):
        deployment.start()
    assert deployment.superlink is None and deployment.nodes == []


def run_script(
    args: list[str], tmp: Path, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None, **more: str
) -> subprocess.CompletedProcess:
    """Run scripts/deploy-local.sh in a session of its own (work folders under `tmp`, in `cwd`, environment `env`
    (default this one's) plus `more`); on timeout it gets SIGTERM, so its EXIT trap stops what it started."""
    env = {**(os.environ if env is None else env), "FEDHELLO_BIN": str(Path(sys.executable).parent), "TMPDIR": str(tmp)}
    proc = subprocess.Popen(
        [str(SCRIPT), *args],
        env={**env, **more},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_script_refuses_plain_http_off_loopback(tmp_path):
    proc = run_script(["--host", "10.0.0.5", "configs/default.yaml", "2"], tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: SuperLink address '10.0.0.5' is not loopback: without TLS (--insecure) only 127.0.0.1, "
        "localhost, ::1 are allowed (fix: pass --tls or --auth)"
    ]
    assert list(tmp_path.iterdir()) == [], "nothing was started or created"


def test_tls_and_node_auth_deployment_runs(tiny_config, tmp_path, started):
    config = two_node_config(tiny_config)
    config.federation.rounds = 1
    config.flower.tls = True
    config.flower.node_auth = True
    summary = ENGINES.get("flower-deploy")().run(config, tmp_path / "run", show_progress=False)

    assert summary["rounds"] == 1
    (record,) = metrics(tmp_path / "run")
    assert sorted(c["id"] for c in record["clients"]) == [0, 1] and record["accuracy"] is not None
    log = (tmp_path / "run" / "flower.log").read_text()
    assert "2 SuperNodes serve all 2 partitions" in log and "lost client" not in log
    (deployment,), stopped = started
    link = deployment.superlink.args
    assert "--insecure" not in link and "--enable-supernode-auth" in link and "--ssl-certfile" in link
    for node in deployment.nodes:
        assert "--insecure" not in node.args and "--root-certificates" in node.args
        assert "--auth-supernode-private-key" in node.args
    assert_nothing_left(deployment, stopped[id(deployment)])
    assert not deployment.workdir.exists(), "keys and certificates are removed with the workdir"


def test_unregistered_supernodes_are_refused(tmp_path, started):
    with LocalDeployment(1, tmp_path / "deploy", node_auth=True) as deployment:
        stranger = generate_node_key(tmp_path / "stranger")  # a valid key that nobody registered
        anonymous = deployment.add_node(0)  # TLS, but no key: Flower would register it on the fly
        unregistered = deployment.add_node(0, stranger.private)
        for node in (anonymous, unregistered):
            node.wait(timeout=120)
        deadline = time.monotonic() + 90
        while (nodes := deployment.list_nodes()) and nodes[0]["status"] != "online" and time.monotonic() < deadline:
            time.sleep(1)
    (_, stopped) = started
    assert_nothing_left(deployment, stopped[id(deployment)])

    assert anonymous.returncode == unregistered.returncode == 1, "both refused SuperNodes exited with an error"
    anonymous_log, unregistered_log = [(deployment.logs / f"supernode-{i}.log").read_text() for i in (1, 2)]
    assert "All SuperNodes must be registered via the CLI" in anonymous_log
    assert "Failed to activate SuperNode" in unregistered_log
    for log in (anonymous_log, unregistered_log):
        assert "Failed to initialize the connection to the SuperLink" in log
    assert [n["status"] for n in nodes] == ["online"], "only the registered SuperNode is known, and it is online"


def test_script_runs_over_tls_with_node_auth(tiny_config, tmp_path):
    config = two_node_config(tiny_config)
    config.federation.rounds = 1
    config.output.dir = "out"  # relative, as in configs/: the script's folder, not the SuperLink's
    dump_config(config, tmp_path / "config.yaml")
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RUN_DIR"}
    proc = run_script(["--auth", str(tmp_path / "config.yaml"), "2"], tmp_path / "tmp", 600, cwd=tmp_path, env=env)

    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(TLS, SuperNode authentication), 2 SuperNodes" in proc.stderr
    (run_dir,) = (tmp_path / "out").iterdir()  # output.dir of the config, as `fedhello run` uses it
    assert run_dir.name.startswith(f"{config.name}-")
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 1
    assert (run_dir / "report" / "report.html").is_file(), "a run started with `flwr run` gets its report"
    assert f"report: {run_dir / 'report' / 'report.html'}" in proc.stderr
    stopped = [int(pid) for pid in re.search(r"stopped: ([\d ]+)", proc.stderr).group(1).split()]
    assert len(stopped) == 3, "a SuperLink and 2 SuperNodes (each started its ClientApp executor itself)"
    assert processes_in_groups(stopped) == [] and processes_mentioning(str(tmp_path / "tmp")) == []
    assert list((tmp_path / "tmp").iterdir()) == [], "the work folder (keys, certificates) is removed"
