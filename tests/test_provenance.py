"""Provenance from the original bytes: C2PA (valid, tampered, corrupt, none), EXIF, PNG text chunks.

Valid manifests are signed here, offline, with a throw-away CA and signer
certificate made with ``cryptography`` (a dependency of c2pa-python); such a
signer is not on the C2PA trust list, which the panel must say.
"""
from __future__ import annotations

import datetime
import io
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from fakeface.serving import provenance
from fakeface.serving.provenance import NO_CREDENTIALS_NOTE, read_provenance
from fakeface.app.render import render_provenance

c2pa = pytest.importorskip("c2pa")

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


def make_signer():
    """A c2pa ES256 signer with a fresh test CA -> signer chain (valid for a month)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str, org: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])

    def usage(*, sign: bool, ca: bool):
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name, signer_name = name("fakeface test CA", "fakeface tests"), name("fakeface test signer", "Test Image Generator Inc")
    validity = dict(not_valid_before=now - datetime.timedelta(days=1), not_valid_after=now + datetime.timedelta(days=30))
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(validity["not_valid_before"])
          .not_valid_after(validity["not_valid_after"])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(usage(sign=False, ca=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(signer_name).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(validity["not_valid_before"])
            .not_valid_after(validity["not_valid_after"])
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(sign=True, ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(serialization.Encoding.PEM)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, private, None))


def sign_png(png: bytes, *, agent: str = "gpt-image-2", source_type: str = AI_SOURCE_TYPE) -> bytes:
    """``png`` with an embedded C2PA manifest declaring it was created by ``agent``."""
    manifest = {
        "claim_generator_info": [{"name": "fakeface-tests", "version": "1.0"}],
        "title": "generated.png",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": {"name": agent}},
        ]}}],
    }
    out = io.BytesIO()
    with c2pa.Builder(manifest) as builder:
        builder.sign(make_signer(), "image/png", io.BytesIO(png), out)
    return out.getvalue()


def png_bytes(size=(48, 48), colour=(150, 90, 60), text: dict[str, str] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _fix_crc(data: bytearray, type_index: int) -> None:
    length = struct.unpack(">I", data[type_index - 4:type_index])[0]
    crc = zlib.crc32(bytes(data[type_index:type_index + 4 + length])) & 0xFFFFFFFF
    data[type_index + 4 + length:type_index + 8 + length] = struct.pack(">I", crc)


@pytest.fixture(scope="module")
def signed_png() -> bytes:
    return sign_png(png_bytes())


# --------------------------------------------------------------------------- C2PA

def test_no_manifest_is_stated_as_proving_nothing():
    result = read_provenance(png_bytes())
    assert result["c2pa"]["status"] == "none"
    assert result["c2pa"]["summary"] == NO_CREDENTIALS_NOTE
    assert "proves nothing" in result["summary"][0]


def test_valid_manifest_reports_signer_generator_and_ai_claim(signed_png):
    result = read_provenance(signed_png)
    c2 = result["c2pa"]
    assert c2["status"] == "valid"
    assert c2["validation_state"] == "Valid"
    assert c2["issuer"] == "Test Image Generator Inc"
    assert c2["signer"] == "fakeface test signer"
    assert c2["software_agents"] == ["gpt-image-2"]
    assert c2["ai_generated"] is True
    assert "created by a generative AI model" in c2["summary"]
    assert "not on the C2PA trust list" in c2["summary"]
    assert c2["problems"] == []


def test_camera_source_type_is_not_called_ai(tmp_path):
    result = read_provenance(sign_png(png_bytes(), agent="CameraApp 2.0",
                                      source_type="http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"))
    assert result["c2pa"]["status"] == "valid"
    assert result["c2pa"]["ai_generated"] is False
    assert "captured by a camera" in result["c2pa"]["summary"]


def test_tampered_pixels_make_the_manifest_invalid(signed_png):
    data = bytearray(signed_png)
    idat = data.find(b"IDAT")
    data[idat + 10] ^= 0xFF
    _fix_crc(data, idat)
    result = read_provenance(bytes(data))
    assert result["c2pa"]["status"] == "invalid"
    assert result["c2pa"]["summary"].startswith("C2PA manifest present but invalid: ")
    assert any("hash" in p for p in result["c2pa"]["problems"])


def test_corrupt_manifest_is_reported_not_raised(signed_png):
    """The manifest chunk cut down to its first 100 bytes (a damaged download)."""
    i = signed_png.find(b"caBX")
    length = struct.unpack(">I", signed_png[i - 4:i])[0]
    data = bytearray(signed_png[:i - 4] + struct.pack(">I", 100) + b"caBX" + signed_png[i + 4:i + 104]
                     + b"\0\0\0\0" + signed_png[i + 8 + length:])
    _fix_crc(data, i)
    result = read_provenance(bytes(data))
    assert result["c2pa"]["status"] == "invalid"
    assert result["c2pa"]["summary"].startswith("C2PA manifest present but invalid: ")
    assert len(result["c2pa"]["summary"]) > len("C2PA manifest present but invalid: ")


def test_formats_without_c2pa_and_missing_library(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buffer, "BMP")
    assert read_provenance(buffer.getvalue())["c2pa"]["status"] == "unsupported"
    monkeypatch.setattr(provenance, "C2PA_AVAILABLE", False)
    result = read_provenance(png_bytes())
    assert result["c2pa"]["status"] == "unavailable"
    assert "not installed" in result["c2pa"]["summary"]


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\0" * 20, b"\xff\xd8\xff" + b"\x01" * 50])
def test_garbage_never_raises(data):
    result = read_provenance(data)
    assert result["exif"] == {} and result["text_chunks"] == {}
    assert result["c2pa"]["status"] in ("none", "unsupported", "invalid")


# --------------------------------------------------------------------------- EXIF and text

def test_exif_camera_fields_are_read_and_gps_is_not_shown():
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "EOS R5", "Adobe Firefly 3"
    sub = exif.get_ifd(0x8769)
    sub[0x829A], sub[0x829D], sub[0x8827], sub[0x9003] = 0.004, 2.8, 400, "2024:05:01 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps[2] = (52.0, 31.0, 12.3456)                      # latitude
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "JPEG", exif=exif)
    result = read_provenance(buffer.getvalue())
    fields = result["exif"]
    assert fields["Camera make"] == "Canon" and fields["Camera model"] == "EOS R5"
    assert fields["Exposure"] == "1/250 s" and fields["F-number"] == "f/2.8" and fields["ISO"] == "400"
    assert fields["Taken"] == "2024:05:01 10:00:00"
    assert fields["GPS location"] == "present (not shown)"
    assert "12.3456" not in repr(result)
    assert any("firefly" in hint for hint in result["generator_hints"])


def test_stable_diffusion_parameters_chunk_is_shown_and_hinted():
    params = "portrait of a woman\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1234"
    result = read_provenance(png_bytes(text={"parameters": params, "Comment": "made with ComfyUI"}))
    assert result["text_chunks"]["parameters"] == params
    hints = " ".join(result["generator_hints"])
    assert "Stable Diffusion" in hints and "comfyui" in hints
    assert result["exif"] == {}


def test_long_text_chunks_are_truncated():
    result = read_provenance(png_bytes(text={"prompt": "x" * 20000}))
    assert len(result["text_chunks"]["prompt"]) <= 4001


def test_panel_escapes_metadata():
    hostile = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    exif = Image.Exif()
    exif[0x0110] = hostile
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "JPEG", exif=exif)
    html = render_provenance(read_provenance(buffer.getvalue()))
    html += render_provenance(read_provenance(png_bytes(text={hostile: hostile})))
    assert "<script>" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html


def test_panel_shows_credentials(signed_png):
    html = render_provenance(read_provenance(signed_png))
    assert "Test Image Generator Inc" in html and "gpt-image-2" in html and "valid" in html
