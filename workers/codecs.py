"""Which transfer syntaxes nightscan decodes, with which plugin, and what to install when one is missing.

pydicom 3 decodes pixel data through plugins (``pydicom.pixels``). Each syntax gets the fastest plugin
measured on CT slices (``python -m bench.decode_speed``); when it is not installed, pydicom's own order
of the remaining plugins is used. JPEG 2000 goes to GDCM, whose OpenJPEG decodes on several threads;
HTJ2K, which only pylibjpeg-openjpeg decodes (on one thread, holding the GIL), to decoder processes.
The codec packages nightscan installs are all BSD or MIT licensed: pylibjpeg-libjpeg (GPL-3) is
deliberately not used; python-gdcm decodes the JPEG processes instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.pixels import get_decoder
from pydicom.pixels.decoders.base import Decoder
from pydicom.uid import UID


class MissingCodecError(RuntimeError):
    """Pixel data in a transfer syntax that no installed package can decode; the message says what to install."""


@dataclass(frozen=True, slots=True)
class Codec:
    """How one transfer syntax is decoded: the preferred pydicom plugin and the packages that provide one."""

    uid: str
    preferred_plugin: str  # "" when pydicom decodes it natively, without a plugin
    packages: tuple[str, ...]  # pip packages, any one of which is enough
    heavy: bool = False  # slow enough per slice (>= ~20 ms at 512 x 512) to pay for a decoder process

    @property
    def name(self) -> str:
        """The transfer syntax's DICOM name."""
        return UID(self.uid).name


_NATIVE = ("pydicom",)
CODECS: dict[str, Codec] = {
    codec.uid: codec
    for codec in (
        Codec("1.2.840.10008.1.2", "", _NATIVE),  # Implicit VR Little Endian
        Codec("1.2.840.10008.1.2.1", "", _NATIVE),  # Explicit VR Little Endian
        Codec("1.2.840.10008.1.2.1.99", "", _NATIVE),  # Deflated Explicit VR Little Endian
        Codec("1.2.840.10008.1.2.2", "", _NATIVE),  # Explicit VR Big Endian
        Codec("1.2.840.10008.1.2.5", "pylibjpeg", ("pylibjpeg-rle", "pydicom")),  # RLE: 7x faster than pydicom's
        Codec("1.2.840.10008.1.2.4.50", "gdcm", ("python-gdcm", "pillow")),  # JPEG Baseline
        Codec("1.2.840.10008.1.2.4.51", "gdcm", ("python-gdcm", "pillow")),  # JPEG Extended (12 bit)
        Codec("1.2.840.10008.1.2.4.57", "gdcm", ("python-gdcm",)),  # JPEG Lossless
        Codec("1.2.840.10008.1.2.4.70", "gdcm", ("python-gdcm",)),  # JPEG Lossless SV1
        Codec("1.2.840.10008.1.2.4.80", "pyjpegls", ("pyjpegls", "python-gdcm")),  # JPEG-LS Lossless
        Codec("1.2.840.10008.1.2.4.81", "pyjpegls", ("pyjpegls", "python-gdcm")),  # JPEG-LS Near-Lossless
        Codec("1.2.840.10008.1.2.4.90", "gdcm", ("python-gdcm", "pylibjpeg-openjpeg")),  # JPEG 2000 Lossless
        Codec("1.2.840.10008.1.2.4.91", "gdcm", ("python-gdcm", "pylibjpeg-openjpeg")),  # JPEG 2000
        Codec("1.2.840.10008.1.2.4.201", "pylibjpeg", ("pylibjpeg-openjpeg",), heavy=True),  # HTJ2K Lossless
        Codec("1.2.840.10008.1.2.4.202", "pylibjpeg", ("pylibjpeg-openjpeg",), heavy=True),  # HTJ2K Lossless RPCL
        Codec("1.2.840.10008.1.2.4.203", "pylibjpeg", ("pylibjpeg-openjpeg",), heavy=True),  # HTJ2K
    )
}


def decoder_for(transfer_syntax_uid: str) -> tuple[Decoder, str]:
    """pydicom's decoder for the syntax and the plugin to ask it for ("" lets pydicom try each it has).

    Raises :class:`MissingCodecError` naming the syntax and the packages to install, for a syntax nightscan
    does not know or one whose codec packages are all missing.
    """
    codec = CODECS.get(str(transfer_syntax_uid))
    if codec is None:
        raise MissingCodecError(
            f"transfer syntax {transfer_syntax_uid} ({UID(str(transfer_syntax_uid)).name}) is not supported; "
            f"supported: {', '.join(sorted(c.name for c in CODECS.values()))}"
        )
    decoder = get_decoder(codec.uid)
    if not decoder.is_available:
        raise MissingCodecError(
            f"transfer syntax {codec.uid} ({codec.name}) cannot be decoded: no codec is installed; "
            f"install one of: {', '.join(codec.packages)} (pip install {codec.packages[0]})"
        )
    plugin = codec.preferred_plugin if codec.preferred_plugin in decoder.available_plugins else ""
    return decoder, plugin


_TRANSFER_SYNTAX_TAG = b"\x02\x00\x10\x00UI"  # (0002,0010) in the file meta: always explicit VR little endian


def transfer_syntax_of(data: bytes) -> str | None:
    """The Transfer Syntax UID in a Part 10 file's meta information, read from the first bytes; None if absent."""
    index = data.find(_TRANSFER_SYNTAX_TAG, 0, 4096)
    if index < 0:
        return None
    length = int.from_bytes(data[index + 6 : index + 8], "little")
    return data[index + 8 : index + 8 + length].rstrip(b"\x00 ").decode("ascii", errors="replace")


def is_heavy(transfer_syntax_uid: str | None) -> bool:
    """Whether objects in this syntax decode slowly enough to be sent to a decoder process."""
    codec = CODECS.get(str(transfer_syntax_uid))
    return codec is not None and codec.heavy


def codec_status() -> list[tuple[str, str, str, str]]:
    """One row per supported syntax: (UID, name, the plugins available, preferred first, or "native" or
    "MISSING", packages to install)."""
    rows = []
    for codec in CODECS.values():
        decoder = get_decoder(codec.uid)
        if not codec.preferred_plugin:
            available = "native"
        elif decoder.is_available:
            plugins = sorted(decoder.available_plugins, key=lambda name: name != codec.preferred_plugin)
            available = ", ".join(plugins)  # the one nightscan asks for first
        else:
            available = "MISSING"
        rows.append((codec.uid, codec.name, available, " or ".join(codec.packages)))
    return rows
