"""Access control and TLS through the real server on loopback: every RPC with no key and with
read, write and admin keys gets the right code; revoked keys stop working on the running server;
the key file holds no usable key; TLS and mutual TLS with certificates made here (cryptography)."""

import datetime
import ipaddress
import json
import os
import stat
import subprocess
import time
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skulens.client import Client
from skulens.security.keys import KeyStore
from skulens.server import Config, Server
from skulens.v1 import skulens_pb2 as pb

D = 8
OK, UNAUTH, DENIED = grpc.StatusCode.OK, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module", params=["sync", "aio"])
def secured(tmp_path_factory, request):
    data = tmp_path_factory.mktemp("data") / "c"
    store = KeyStore(str(tmp_path_factory.mktemp("k") / "keys.json"))
    keys = {role: store.add(role)[1] for role in ("read", "write", "admin")}
    s = Server(Config(data=str(data), dim=D, port=0, keys=store.path, server=request.param))
    with Client(s.target, api_key=keys["write"]) as c:
        c.upsert([dict(id="p0", vector=np.ones(D)), dict(id="p1", vector=np.arange(D) + 1.0)])
    yield s, store, keys
    s.stop()


CALLS = {  # RPC -> (call on a Client, the role it needs)
    "Search": (lambda c: c.search(vector=np.ones(D), top_k=1), "read"),
    "SearchStream": (lambda c: list(c.search_stream([dict(vector=np.ones(D))])), "read"),
    "GetProduct": (lambda c: c.get("p0"), "read"),
    "Stats": (lambda c: c.stats(), "read"),
    "Upsert": (lambda c: c.upsert([dict(id="w", vector=np.ones(D))]), "write"),
    "UpsertStream": (lambda c: c.upsert_stream([[dict(id="w2", vector=np.ones(D))]]), "write"),
    "Delete": (lambda c: c.delete(["nobody"]), "write"),
    "AddImages": (lambda c: c.add_images("p1", {"side": np.ones(D)}), "write"),
    "RemoveImages": (lambda c: c.remove_images("p1", ["side"]), "write"),
    "Embed": (lambda c: c.embed(text="boots"), "read"),   # past auth: UNIMPLEMENTED (no text encoder here)
    "SearchScene": (lambda c: c.search_scene(b"\x89PNG"), "read"),   # past auth: UNIMPLEMENTED (no image encoder)
    "SearchSceneStream": (lambda c: list(c.search_scene_stream([b"\x89PNG"])), "read"),
}
NO_ENCODER = {"Embed", "SearchScene", "SearchSceneStream"}
RANK = {None: -1, "read": 0, "write": 1, "admin": 2}


def test_every_rpc_of_the_proto_is_checked():
    assert set(CALLS) == set(pb.DESCRIPTOR.services_by_name["ProductSearch"].methods_by_name)


@pytest.mark.parametrize("rpc", sorted(CALLS))
@pytest.mark.parametrize("role", [None, "bogus", "read", "write", "admin"])
def test_every_rpc_with_every_kind_of_key(secured, rpc, role):
    s, _, keys = secured
    call, needs = CALLS[rpc]
    key = keys.get(role) if role != "bogus" else "sk_00000000_not-a-real-secret"
    with Client(s.target, api_key=key) as c:
        try:
            call(c)
            code = OK
        except grpc.RpcError as e:
            code, msg = e.code(), e.details()
    passed = OK if rpc not in NO_ENCODER else grpc.StatusCode.UNIMPLEMENTED
    want = UNAUTH if role in (None, "bogus") else (passed if RANK[role] >= RANK[needs] else DENIED)
    assert code == want, (rpc, role)
    if code == DENIED:
        assert f"needs {needs!r}" in msg and keys[role] not in msg   # names the role, never echoes the key


def test_embed_needs_read_and_health_and_reflection_stay_open(secured):
    s, _, keys = secured
    with Client(s.target) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.embed(text="boots")
        assert e.value.code() == UNAUTH
        assert health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
    with Client(s.target, api_key=keys["read"]) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.embed(text="boots")
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED   # past auth: this server has no text encoder


def test_health_can_be_closed_too(tmp_path):
    store = KeyStore(str(tmp_path / "keys.json"))
    _, key = store.add("read")
    s = Server(Config(data=str(tmp_path / "c"), dim=D, port=0, keys=store.path, auth_open=""))
    try:
        for k, want in ((None, UNAUTH), (key, None)):
            with Client(s.target, api_key=k) as c:
                try:
                    health_pb2_grpc.HealthStub(c.channel).Check(health_pb2.HealthCheckRequest(), timeout=5,
                                                                metadata=c.metadata)
                    code = None
                except grpc.RpcError as e:
                    code = e.code()
            assert code == want
    finally:
        s.stop()
    with pytest.raises(ValueError, match="auth_open"):
        Server(Config(data=str(tmp_path / "d"), dim=D, port=0, auth_open="everything"))


def test_stats_details_are_for_admin_keys(secured):
    s, _, keys = secured
    with Client(s.target, api_key=keys["read"]) as c:
        assert set(c.stats()) == {"products", "dim", "storage", "encoders"}
    with Client(s.target, api_key=keys["admin"]) as c:
        assert "hnsw" in c.stats() and "searches" in c.stats()


def test_a_revoked_key_stops_at_once_and_the_file_holds_no_key(secured):
    s, store, _ = secured
    kid, key = store.add("read", note="temporary")
    time.sleep(0.2)   # the server looks at the key file at most every 0.1 s
    with Client(s.target, api_key=key) as c:
        assert c.search(vector=np.ones(D), top_k=1)
        store.revoke(kid)
        time.sleep(0.2)   # the server looks at the key file at most every 0.1 s
        with pytest.raises(grpc.RpcError) as e:
            c.search(vector=np.ones(D), top_k=1)
        assert e.value.code() == UNAUTH
    text = open(store.path).read()
    assert key.split("_", 2)[2] not in text and stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert all(set(k) == {"id", "role", "note", "created"} for k in store.list())


def test_keys_cli_and_the_clients_api_key_flag(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = lambda *a: subprocess.run([sys.executable, "-m", "skulens.cli", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True)
    r = run("keys", "add", "--role", "write", "--data", str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("sk_") and json.loads(run("keys", "list", "--data", str(tmp_path / "c")).stdout)[0]["role"] == "write"
    assert run("keys", "add", "--role", "root", "--data", str(tmp_path / "c")).returncode == 2
    s = Server(Config(data=str(tmp_path / "c"), dim=D, port=0))
    try:
        assert run("--target", s.target, "stats").returncode != 0                      # no key: refused
        assert run("--target", s.target, "--api-key", key, "stats").returncode == 0
        r = subprocess.run([sys.executable, "-m", "skulens.cli", "--target", s.target, "stats"],
                           env=dict(env, SKULENS_API_KEY=key), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    finally:
        s.stop()
    kid = key.split("_")[1]
    assert run("keys", "revoke", kid, "--data", str(tmp_path / "c")).returncode == 0
    assert run("keys", "revoke", kid, "--data", str(tmp_path / "c")).returncode == 2


# --- TLS -------------------------------------------------------------------------------
def _certs(tmp_path):
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    now = datetime.datetime.now(datetime.timezone.utc)

    def make(name, issuer=None, issuer_key=None, ca=False, san=None):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = b.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    def write(name, key, cert):
        (tmp_path / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                                 serialization.PrivateFormat.PKCS8,
                                                                 serialization.NoEncryption()))
        (tmp_path / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    ca_key, ca = make("skulens test CA", ca=True)
    write("ca", ca_key, ca)
    write("server", *make("server", ca.subject, ca_key, san=[x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    write("client", *make("scanner-7", ca.subject, ca_key))
    other_key, other = make("someone else's CA", ca=True)
    write("stranger", *make("stranger", other.subject, other_key))
    return {n: str(tmp_path / n) for n in ("ca", "server", "client", "stranger")}


@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_tls_and_mutual_tls(tmp_path, kind):
    p = _certs(tmp_path)
    s = Server(Config(data=str(tmp_path / "c"), dim=D, port=0, tls_cert=p["server"] + ".pem",
                      tls_key=p["server"] + ".key", tls_client_ca=p["ca"] + ".pem", server=kind))
    try:
        with Client(s.target, tls_ca=p["ca"] + ".pem", tls_cert=p["client"] + ".pem",
                    tls_key=p["client"] + ".key") as c:
            c.upsert([dict(id="t", vector=np.ones(D))])
            assert c.search(vector=np.ones(D), top_k=1)[0].product_id == "t"
        for kw in (dict(tls_ca=p["ca"] + ".pem"),                                   # no client certificate
                   dict(tls_ca=p["ca"] + ".pem", tls_cert=p["stranger"] + ".pem", tls_key=p["stranger"] + ".key")):
            with Client(s.target, timeout=5, **kw) as c:
                with pytest.raises(grpc.RpcError) as e:
                    c.stats()
                assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with Client(s.target, timeout=5) as c:                                      # plaintext to a TLS port
            with pytest.raises(grpc.RpcError) as e:
                c.stats()
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        s.stop()
    s = Server(Config(data=str(tmp_path / "d"), dim=D, port=0, tls_cert=p["server"] + ".pem",
                      tls_key=p["server"] + ".key"))
    try:  # TLS without client certificates: any client that trusts the CA
        with Client(s.target, tls_ca=p["ca"] + ".pem") as c:
            assert c.stats()["products"] == 0
    finally:
        s.stop()
    with pytest.raises(ValueError, match="TLS needs both"):
        Server(Config(data=str(tmp_path / "e"), dim=D, port=0, tls_cert=p["server"] + ".pem"))


# --- the audit trail -----------------------------------------------------------------------
def test_every_write_rpc_is_audited():
    from skulens.security.audit import AUDITED
    from skulens.security.auth import NEEDS
    assert set(AUDITED) == {m for m, role in NEEDS.items() if role == "write"}


def test_every_write_is_audited_with_who_what_and_outcome(tmp_path):
    from skulens.security.audit import verify
    store = KeyStore(str(tmp_path / "keys.json"))
    kid, key = store.add("write")
    s = Server(Config(data=str(tmp_path / "c"), dim=D, port=0, keys=store.path))
    try:
        with Client(s.target, api_key=key, metadata={"x-request-id": "req-42"}) as c:
            c.upsert([dict(id="a", vector=np.ones(D)), dict(id="b", vector=np.arange(D) + 1.0)])
            c.upsert_stream([[dict(id="c", vector=np.ones(D))], [dict(id="d", vector=np.ones(D))]])
            c.delete(["a", "nobody"])
            with pytest.raises(grpc.RpcError):
                c.upsert([dict(id="bad", vector=[float("nan")] * D)])
            c.add_images("b", {"back": np.ones(D)})
            c.remove_images("b", ["back"])
            with pytest.raises(grpc.RpcError):
                c.add_images("nobody", {"back": np.ones(D)})
            c.search(vector=np.ones(D), top_k=1)             # reads are not audited
        with Client(s.target) as c:
            with pytest.raises(grpc.RpcError):
                c.delete(["b"])                               # refused before it reaches the handler
    finally:
        s.stop()
    path = tmp_path / "c" / "audit.jsonl"
    recs = [json.loads(line) for line in open(path)]
    assert [(r["action"], r["outcome"], r["who"]) for r in recs] == [
        ("Upsert", "OK", kid), ("UpsertStream", "OK", kid), ("Delete", "OK", kid), ("Upsert", "INVALID_ARGUMENT", kid),
        ("AddImages", "OK", kid), ("RemoveImages", "OK", kid), ("AddImages", "NOT_FOUND", kid)]
    assert recs[4]["what"]["ids"] == ["b", "b/back"] and recs[5]["what"]["seq"] > recs[4]["what"]["seq"]
    assert recs[0]["what"]["ids"] == ["a", "b"] and recs[0]["what"]["seq"] > 0 and recs[0]["request_id"] == "req-42"
    assert recs[1]["what"] == {"ids": ["c", "d"], "count": 2, "seq": recs[1]["what"]["seq"]}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and key not in path.read_text()
    assert verify(str(path)) == (True, 7, "intact")
    # Tamper with line 3 (a delete that "never happened"): the chain breaks exactly there.
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = lines[2].replace('"a"', '"z"')
    path.write_text("".join(lines))
    ok, line, why = verify(str(path))
    assert not ok and line == 3 and "edited" in why
    # Removing a line breaks the chain at the line after it.
    path.write_text("".join(lines[:1] + lines[2:]))
    assert verify(str(path))[:2] == (False, 2)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-m", "skulens.cli", "audit", "verify", "--file", str(path)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1 and "line 2" in r.stderr


def test_key_management_joins_the_audit_trail(tmp_path):
    from skulens.security.audit import verify
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cli = lambda *a: subprocess.run([sys.executable, "-m", "skulens.cli", *a], env=env, capture_output=True,  # noqa: E731
                                    text=True)
    kid = cli("keys", "add", "--role", "admin", "--data", str(tmp_path)).stdout.split()[1]
    assert cli("keys", "revoke", kid, "--data", str(tmp_path)).returncode == 0
    recs = [json.loads(line) for line in open(tmp_path / "audit.jsonl")]
    assert [(r["action"], r["what"]["key"]) for r in recs] == [("keys.add", kid), ("keys.revoke", kid)]
    r = cli("audit", "verify", "--data", str(tmp_path))
    assert r.returncode == 0 and "2 records, chain intact" in r.stdout and verify(str(tmp_path / "audit.jsonl"))[0]


def test_an_acknowledged_write_has_its_record_after_kill_9(tmp_path):
    """The record is fsynced before the caller hears back: kill -9 right after the answer keeps it."""
    import signal
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "skulens.cli", "serve", "--data", str(tmp_path / "c"),
                             "--port", "0", "--dim", str(D)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        target = proc.stdout.readline().split(" on ")[1].split(" ")[0]
        with Client(target) as c:
            for i in range(5):
                c.upsert([dict(id=f"k{i}", vector=np.ones(D) + i)])
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    recs = [json.loads(line) for line in open(tmp_path / "c" / "audit.jsonl")]
    assert [r["what"]["ids"] for r in recs] == [[f"k{i}"] for i in range(5)]


# --- per-caller limits ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sync", "aio"])
def test_a_flooding_key_is_limited_and_the_others_are_not(tmp_path, kind):
    store = KeyStore(str(tmp_path / "keys.json"))
    _, flood = store.add("read")
    _, polite = store.add("read")
    s = Server(Config(data=str(tmp_path / "c"), dim=D, port=0, keys=store.path, key_rate=20, key_burst=5, server=kind,
                      key_concurrency=2))
    try:
        with Client(s.target, api_key=flood) as c:
            codes = []
            for _ in range(30):
                try:
                    c.search(vector=np.ones(D), top_k=1)
                    codes.append("OK")
                except grpc.RpcError as e:
                    codes.append(e.code().name)
                    if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        hint = dict(e.trailing_metadata())["retry-after-ms"]
                        assert int(hint) >= 1 and f"retry in {hint} ms" in e.details()
            assert codes[:5] == ["OK"] * 5 and codes.count("RESOURCE_EXHAUSTED") >= 10
        with Client(s.target, api_key=polite) as c:          # its own bucket: untouched by the flood
            for _ in range(5):
                c.search(vector=np.ones(D), top_k=1)
        time.sleep(0.3)
        import threading
        release = threading.Event()

        def silent():
            release.wait(10)
            return
            yield  # noqa: makes this a generator
        with Client(s.target, api_key=polite) as c:          # two streams in flight: a third is refused
            streams = [c.stub.SearchStream(silent(), metadata=c.metadata) for _ in range(2)]
            time.sleep(0.5)
            with pytest.raises(grpc.RpcError) as e:
                c.search(vector=np.ones(D), top_k=1)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "in flight" in e.value.details()
            release.set()
            for st in streams:
                st.cancel()
    finally:
        s.stop()
