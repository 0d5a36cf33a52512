"""Text out of a file's bytes, for retrieval and for models that cannot read the file: PDF (pypdf), DOCX (its
XML, read from the zip), HTML (trafilatura's readable text) and UTF-8 text of every kind (plain, Markdown,
code, JSON, CSV). Sync, pure and CPU-bound: callers run it in a thread (`asyncio.to_thread`).

What the bytes are is decided by their signature first (`%PDF-`, a zip holding `word/document.xml`), then by
the media type and the file name. A type Parley cannot read is `unsupported_file`; bytes that are damaged or
not what they claim to be are `invalid_file` (errors.UnreadableFile).
"""

from __future__ import annotations

import bisect
import io
import zipfile
from dataclasses import dataclass
from types import MappingProxyType
from typing import IO, Literal
from xml.etree import ElementTree

from parley.errors import UnreadableFile

Kind = Literal["pdf", "docx", "html", "text"]

PDF_TYPE = "application/pdf"
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# A DOCX's document.xml may decompress to at most this (a zip bomb is refused, not inflated).
MAX_DOCX_XML_BYTES = 256 * 1024 * 1024

# Media types by extension: Parley's own table, so a name means the same type on every machine (Python's
# `mimetypes` reads the system's files, lacks .md/.docx/.yaml and takes .ts for MPEG-TS).
_EXTENSION_TYPES = MappingProxyType({
    ".md": "text/markdown", ".markdown": "text/markdown", ".rst": "text/x-rst", ".txt": "text/plain",
    ".csv": "text/csv", ".tsv": "text/tab-separated-values", ".json": "application/json",
    ".jsonl": "application/jsonl", ".ndjson": "application/jsonl", ".yaml": "application/yaml",
    ".yml": "application/yaml", ".toml": "application/toml", ".xml": "application/xml",
    ".html": "text/html", ".htm": "text/html", ".xhtml": "application/xhtml+xml", ".pdf": PDF_TYPE,
    ".docx": DOCX_TYPE, ".py": "text/x-python", ".js": "text/javascript", ".mjs": "text/javascript",
    ".ts": "text/x-typescript", ".tsx": "text/x-typescript", ".jsx": "text/javascript", ".java": "text/x-java",
    ".c": "text/x-c", ".h": "text/x-c", ".cc": "text/x-c++", ".cpp": "text/x-c++", ".hpp": "text/x-c++",
    ".cs": "text/x-csharp", ".go": "text/x-go", ".rs": "text/x-rust", ".rb": "text/x-ruby", ".php": "text/x-php",
    ".swift": "text/x-swift", ".kt": "text/x-kotlin", ".scala": "text/x-scala", ".sh": "text/x-shellscript",
    ".sql": "application/sql", ".tex": "text/x-tex", ".css": "text/css", ".ini": "text/plain",
    ".cfg": "text/plain", ".conf": "text/plain", ".log": "text/plain", ".r": "text/x-r", ".lua": "text/x-lua",
    ".pl": "text/x-perl", ".dart": "text/x-dart", ".ex": "text/x-elixir", ".hs": "text/x-haskell",
    ".vue": "text/plain", ".proto": "text/plain", ".graphql": "text/plain",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".svg": "image/svg+xml",
    ".ico": "image/vnd.microsoft.icon", ".heic": "image/heic", ".mp3": "audio/mpeg", ".wav": "audio/wav",
    ".ogg": "audio/ogg", ".flac": "audio/flac", ".m4a": "audio/mp4", ".mp4": "video/mp4", ".webm": "video/webm",
    ".mov": "video/quicktime", ".zip": "application/zip", ".gz": "application/gzip", ".tar": "application/x-tar",
    ".7z": "application/x-7z-compressed", ".doc": "application/msword", ".xls": "application/vnd.ms-excel",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".ppt": "application/vnd.ms-powerpoint",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text", ".rtf": "application/rtf", ".epub": "application/epub+zip",
    ".parquet": "application/vnd.apache.parquet", ".wasm": "application/wasm",
})
# Types that are not text and that Parley does not read: refused by name rather than decoded as garbage.
_UNSUPPORTED_PREFIXES = ("image/", "audio/", "video/", "font/")
_UNSUPPORTED_EXTENSIONS = frozenset({
    ".doc", ".xls", ".xlsx", ".ppt", ".pptx", ".odt", ".ods", ".odp", ".rtf", ".epub", ".zip", ".gz", ".tgz",
    ".tar", ".7z", ".rar", ".bz2", ".xz", ".exe", ".dll", ".so", ".bin", ".dmg", ".iso", ".sqlite", ".db",
    ".parquet", ".pkl", ".npy", ".wasm", ".class", ".jar",
})
_TEXT_APPLICATION_TYPES = frozenset(
    t for t in _EXTENSION_TYPES.values() if t.startswith("application/") and t not in (PDF_TYPE, DOCX_TYPE)
) | {"application/javascript", "application/x-sh", "application/x-python"}
_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


@dataclass(frozen=True, slots=True)
class ExtractedText:
    """A file's text. For PDFs, `page_starts[n]` is the offset in `text` where page n + 1 begins."""

    text: str
    kind: Kind
    media_type: str
    page_starts: tuple[int, ...] = ()
    title: str | None = None

    def page_at(self, offset: int) -> int | None:
        """The 1-based page the character at `offset` is on (None for a file without pages)."""
        if not self.page_starts:
            return None
        return max(1, bisect.bisect_right(self.page_starts, offset))


def guess_media_type(filename: str | None) -> str | None:
    """The media type a file name's extension suggests (None when Parley's table does not know it)."""
    return _EXTENSION_TYPES.get(_extension(filename)) if filename else None


def extract_text(data: bytes, filename: str | None, mime: str | None, *, max_chars: int | None = None) -> ExtractedText:
    """The text of a file. `mime` is what the client declared (parameters such as charset are ignored);
    UnreadableFile (`unsupported_file` / `invalid_file`) when there is no text to get."""
    declared = _media_type(mime)
    if declared in ("", "application/octet-stream", "binary/octet-stream"):
        declared = guess_media_type(filename) or ""
    name = filename or "the file"
    if data.startswith(b"%PDF-"):
        result = _pdf(data, name)
    elif data.startswith(b"PK\x03\x04"):
        result = _docx(data, name, declared)
    elif declared == PDF_TYPE or declared == DOCX_TYPE:
        what = "a PDF" if declared == PDF_TYPE else "a DOCX document"
        raise UnreadableFile(f"{name} is not {what}: its bytes do not start like one.", "invalid_file")
    elif declared in HTML_TYPES or (not declared and _looks_like_html(data)):
        result = _html(data, name)
    else:
        _refuse_binary_types(declared, filename, name)
        result = ExtractedText(_decode_text(data, name, declared), "text", declared or "text/plain")
    if max_chars is not None and len(result.text) > max_chars:
        starts = tuple(s for s in result.page_starts if s < max_chars)
        return ExtractedText(result.text[:max_chars], result.kind, result.media_type, starts, result.title)
    return result


def _media_type(mime: str | None) -> str:
    return (mime or "").split(";", 1)[0].strip().lower()


def _extension(filename: str) -> str:
    base = filename.rsplit("/", 1)[-1]
    return "." + base.rsplit(".", 1)[-1].lower() if "." in base else ""


def _looks_like_html(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


def _refuse_binary_types(declared: str, filename: str | None, name: str) -> None:
    extension = _extension(filename) if filename else ""
    if declared.startswith(_UNSUPPORTED_PREFIXES) or extension in _UNSUPPORTED_EXTENSIONS:
        kind = declared or extension
        raise UnreadableFile(
            f"{name} is a {kind} file; Parley reads text from PDF, DOCX, HTML and text files (plain text, Markdown, "
            "code, JSON, CSV).", "unsupported_file")


def _decode_text(data: bytes, name: str, declared: str) -> str:
    """UTF-8 (with or without a BOM), or UTF-16 with a BOM; anything else is refused, never guessed."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise UnreadableFile(f"{name} starts with a UTF-16 byte order mark but is not valid UTF-16.",
                                 "invalid_file") from None
    says_text = declared.startswith("text/") or declared in _TEXT_APPLICATION_TYPES
    if b"\x00" in data[:65536]:
        if says_text:
            raise UnreadableFile(f"{name} is declared as {declared} but holds binary data (NUL bytes).",
                                 "invalid_file")
        raise UnreadableFile(f"{name} is a binary file of a type Parley does not read; it reads PDF, DOCX, HTML "
                             "and UTF-8 text files.", "unsupported_file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        code = "invalid_file" if says_text else "unsupported_file"
        raise UnreadableFile(f"{name} is not UTF-8 text (invalid byte at offset {err.start}); save it as UTF-8.",
                             code) from None



def _pdf(data: bytes, name: str) -> ExtractedText:
    import pypdf  # on first use: most requests never read a PDF

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise UnreadableFile(f"{name} is an encrypted PDF; upload it without a password.", "invalid_file")
        pages = list(reader.pages)
    except UnreadableFile:
        raise
    except Exception as err:  # pypdf raises many kinds on damaged files (PdfReadError, ValueError, KeyError...)
        raise UnreadableFile(f"{name} cannot be read as a PDF ({type(err).__name__}: {err}).", "invalid_file") from None
    texts: list[str] = []
    failures = 0
    for page in pages:
        try:
            texts.append((page.extract_text() or "").strip())
        except Exception:  # one damaged page must not lose the others
            texts.append("")
            failures += 1
    if not any(texts):
        why = "none of its pages could be read" if failures == len(pages) and pages else (
            "it has no text layer (a scanned document needs OCR, which Parley does not do)")
        raise UnreadableFile(f"{name} has no text Parley can extract: {why}.", "invalid_file")
    starts: list[int] = []
    offset = 0
    for text in texts:
        starts.append(offset)
        offset += len(text) + 2
    return ExtractedText("\n\n".join(texts), "pdf", PDF_TYPE, tuple(starts))


def _docx(data: bytes, name: str, declared: str) -> ExtractedText:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        info = archive.getinfo("word/document.xml")
    except KeyError:
        kind = "an XLSX/PPTX/ODF document or another zip archive" if declared != DOCX_TYPE else "a damaged DOCX"
        code = "invalid_file" if declared == DOCX_TYPE else "unsupported_file"
        raise UnreadableFile(f"{name} is {kind}; of the Office formats Parley reads only DOCX.", code) from None
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise UnreadableFile(f"{name} is a damaged zip archive ({err}).", "invalid_file") from None
    if info.file_size > MAX_DOCX_XML_BYTES:
        raise UnreadableFile(f"{name}'s text is larger than {MAX_DOCX_XML_BYTES} bytes uncompressed.", "invalid_file")
    try:
        with archive.open(info) as xml:
            paragraphs = _docx_paragraphs(xml)
    except (ElementTree.ParseError, zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise UnreadableFile(f"{name} is a damaged DOCX document ({err}).", "invalid_file") from None
    return ExtractedText("\n".join(paragraphs), "docx", DOCX_TYPE)


def _docx_paragraphs(xml: IO[bytes]) -> list[str]:
    """Each `w:p` (body paragraphs, table cells and text boxes, in document order) as one line; `w:tab` is a
    tab and `w:br`/`w:cr` a line break. Parsed as a stream, each element freed once read."""
    paragraphs: list[str] = []
    open_paragraphs: list[list[str]] = []
    for event, element in ElementTree.iterparse(xml, events=("start", "end")):
        tag = element.tag
        if event == "start":
            if tag == f"{_W}p":
                open_paragraphs.append([])
            continue
        if tag == f"{_W}p":
            line = "".join(open_paragraphs.pop()).strip()
            if line:
                paragraphs.append(line)
        elif open_paragraphs and tag == f"{_W}t":
            open_paragraphs[-1].append(element.text or "")
        elif open_paragraphs and tag == f"{_W}tab":
            open_paragraphs[-1].append("\t")
        elif open_paragraphs and tag in (f"{_W}br", f"{_W}cr"):
            open_paragraphs[-1].append("\n")
        if tag in (f"{_W}p", f"{_W}tbl"):
            element.clear()
    return paragraphs


def _html(data: bytes, name: str) -> ExtractedText:
    import trafilatura  # on first use: loads lxml and its models

    try:
        document = trafilatura.bare_extraction(data, with_metadata=True, include_comments=False,
                                               include_tables=True, favor_recall=True)
        # bare_extraction gives a Document (a dict only with as_dict=True, which is not asked for here).
        text = str(getattr(document, "text", None) or "")
        title = str(getattr(document, "title", None) or "") or None
        if not text:  # too short or unusual for the extractor: keep the page's whole text
            text = trafilatura.html2txt(data) or ""
    except Exception as err:  # lxml and trafilatura fail in many ways on broken markup
        raise UnreadableFile(f"{name} cannot be read as HTML ({type(err).__name__}).", "invalid_file") from None
    return ExtractedText(text.strip(), "html", "text/html", title=title)
