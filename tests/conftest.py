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


# The end-to-end tests (real Flower and Ray processes: CPU-heavy and timed) live in these files;
# those on the emulated testbed and the Ray cluster's form a chain of their own
# (`pytest_xdist_make_scheduler`).
_SECOND = r"harness/test_testbed|experiments/test_testbed_e2e|fl_app/test_e2e_ray_cluster"
E2E_FILES = re.compile(rf"^tests/(fl_app/test_e2e_\w+|{_SECOND})\.py$")
SECOND_CHAIN_FILES = re.compile(rf"^tests/({_SECOND})\.py$")


def pytest_collection_modifyitems(config, items):
    """The e2e tests first (their worker starts on them at once), then the rest in order."""
    e2e = [item for item in items if item.get_closest_marker("e2e")]
    misplaced = [i.nodeid for i in e2e if not E2E_FILES.match(i.nodeid.split("::")[0])]
    if misplaced:
        raise pytest.UsageError(f"e2e tests outside {E2E_FILES.pattern}: {misplaced}")
    items[:] = e2e + [item for item in items if not item.get_closest_marker("e2e")]


def pytest_xdist_make_scheduler(config, log):
    """Two workers (pyproject's `-n 2`): one unit of work per test module, and the e2e
    modules in two units (chains), handed out first, one to each worker. So one worker runs
    the Flower e2e tests one at a time from the start (the suite's longest chain), the other
    the testbed's and the Ray cluster's and then the rest module by module (module fixtures
    run once): never two e2e tests on one worker, and neither worker idle while the other
    still has e2e tests to run. Measured on a clean clone here: 681 and 685 s; with the
    testbed's tests last on the module worker instead, 762 s (they then overlapped unit tests
    and the e2e chain's end at once). The Ray cluster's test (about 35 s) moved to the second
    chain when the first had become the longer by far (686 s of tests against 540 s)."""
    from xdist.scheduler import LoadScopeScheduling

    class E2EApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::")[0]
            if SECOND_CHAIN_FILES.match(path):
                return "second-chain"
            return "e2e" if E2E_FILES.match(path) else path

    return E2EApart(config, log)
