"""Test-wide setup: private preset and datasets caches (tests never touch the user's), TLS test
material, and a recorder of the stream frames the server decodes."""

import datetime
import ipaddress
import os
import re
import tempfile
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# Set before any test imports fl_app, and inherited by the Flower processes tests start.
os.environ.setdefault("EDGESPLIT_CACHE", tempfile.mkdtemp(prefix="edgesplit-cache-"))
# Local datasets read through Hugging Face `datasets` leave its Arrow cache here, not in the user's.
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def server_frames(monkeypatch):
    """The list of every stream frame the server decodes from now on (frames the devices decode
    are left out)."""
    from edgesplit import framing  # imported late: the cache variable above must come first

    frames = []
    decode = framing.decode

    def recording_decode(*args, **kwargs):
        frame = decode(*args, **kwargs)
        if threading.current_thread().name.startswith("stream"):  # the server's gRPC workers
            frames.append(frame)
        return frame

    monkeypatch.setattr("strategies.stream_transport.framing.decode", recording_decode)
    return frames


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (PEM files), keyed
    like the run config's TLS settings."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "EdgeSplit test CA")])
    ca = _cert(ca_name, ca_key, ca_key.public_key(), ca=True)
    server = _cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_key,
                   key.public_key(), issuer=ca_name)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "server.pem").write_bytes(server.public_bytes(pem))
    (folder / "server.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return {"stream.tls-certfile": str(folder / "server.pem"),
            "stream.tls-keyfile": str(folder / "server.key"),
            "stream.tls-ca-certfile": str(folder / "ca.pem")}


def _cert(subject, issuer_key, public_key, issuer=None, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(issuer or subject).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


# The end-to-end tests (real Flower and Ray processes) live in these files; they form three
# units of work (`pytest_xdist_make_scheduler`): the Ray simulations, the deployments, and the
# emulated testbed's.
_TESTBED = r"harness/test_testbed|experiments/test_testbed_e2e"
E2E_FILES = re.compile(rf"^tests/(fl_app/test_e2e_\w+|{_TESTBED})\.py$")
TESTBED_FILES = re.compile(rf"^tests/({_TESTBED})\.py$")
# Ray simulations: their own unit, so two never meet one Ray cluster.
RAY_TESTS = re.compile(r"^tests/fl_app/(test_e2e_(simulation|failure|ray_cluster)\.py|"
                       r"test_e2e_crash\.py::test_simulation_)")


def pytest_collection_modifyitems(config, items):
    """The e2e tests first (their workers start on them at once: the Ray simulations, then the
    deployments, then the testbed's), then the rest in order."""
    e2e = sorted((item for item in items if item.get_closest_marker("e2e")),
                 key=lambda item: (not RAY_TESTS.match(item.nodeid),
                                   bool(TESTBED_FILES.match(item.nodeid.split("::")[0]))))
    misplaced = [i.nodeid for i in e2e if not E2E_FILES.match(i.nodeid.split("::")[0])]
    if misplaced:
        raise pytest.UsageError(f"e2e tests outside {E2E_FILES.pattern}: {misplaced}")
    items[:] = e2e + [item for item in items if not item.get_closest_marker("e2e")]


def pytest_xdist_make_scheduler(config, log):
    """Three workers (pyproject's `-n 3`) on two cores: the e2e tests mostly wait (Flower's
    polls, process start-ups, timeouts) and the unit tests mostly compute. One unit of work per
    test module, except the e2e tests: the Ray simulations one unit, the deployments another,
    the testbed's a third, handed out first, one to each worker; each worker then takes the
    unit modules in turn (module fixtures run once). So no worker runs two e2e tests at once,
    no two Ray simulations meet, and the two Flower chains run side by side while the cores
    serve whichever test computes."""
    from xdist.scheduler import LoadScopeScheduling

    class E2EApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            if TESTBED_FILES.match(path):
                return "testbed"
            if RAY_TESTS.match(nodeid):
                return "e2e-ray"
            return "e2e-deployment" if E2E_FILES.match(path) else path

    return E2EApart(config, log)
