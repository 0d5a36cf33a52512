"""extract_text on real documents: PDFs made by a small PDF writer here (several pages, compressed content
streams, kerned text), DOCX made by python-docx, an HTML article with boilerplate, text of every kind; and the
typed refusals (`unsupported_file`, `invalid_file`) for what cannot be read."""

from __future__ import annotations

import io

import docx
import pypdf
import pytest

from parley.errors import UnreadableFile
from parley.retrieval.extract import DOCX_TYPE, extract_text, guess_media_type
from parley.testing.documents import make_pdf

PAGES = [
    ["Quarterly report (draft)", "Revenue grew by 12 percent", "Costs were flat."],
    ["Second page: risks", "Supply chain delays remain", "Caf\xe9 expansion paused"],
    ["Appendix", "Figures are unaudited."],
]


def test_pdf_text_with_page_boundaries() -> None:
    result = extract_text(make_pdf(PAGES), "report.pdf", "application/pdf")
    assert result.kind == "pdf" and result.media_type == "application/pdf"
    assert len(result.page_starts) == 3 and result.page_starts[0] == 0
    assert "Quarterly report (draft)" in result.text and "Revenue grew by 12 percent" in result.text
    assert "Caf\xe9 expansion paused" in result.text
    second = result.text.index("Second page")
    assert result.page_at(second) == 2 and result.page_at(0) == 1
    assert result.page_at(result.text.index("unaudited")) == 3
    assert result.text[result.page_starts[1]:].startswith("Second page")


def test_pdf_is_recognised_by_its_bytes_whatever_it_is_called() -> None:
    assert extract_text(make_pdf(PAGES), "upload", "application/octet-stream").kind == "pdf"
    assert extract_text(make_pdf(PAGES), None, None).kind == "pdf"


def test_damaged_encrypted_and_textless_pdfs_are_invalid() -> None:
    whole = make_pdf(PAGES)
    with pytest.raises(UnreadableFile) as damaged:
        extract_text(whole[: len(whole) // 3], "cut.pdf", None)
    assert damaged.value.code == "invalid_file" and damaged.value.status == 400

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(io.BytesIO(whole)))
    writer.encrypt("secret", algorithm="AES-128")
    locked = io.BytesIO()
    writer.write(locked)
    with pytest.raises(UnreadableFile, match="encrypted") as encrypted:
        extract_text(locked.getvalue(), "locked.pdf", None)
    assert encrypted.value.code == "invalid_file"

    blank = pypdf.PdfWriter()
    blank.add_blank_page(612, 792)
    scanned = io.BytesIO()
    blank.write(scanned)
    with pytest.raises(UnreadableFile, match="no text layer"):
        extract_text(scanned.getvalue(), "scan.pdf", None)

    with pytest.raises(UnreadableFile) as pretender:
        extract_text(b"just text", "fake.pdf", "application/pdf")
    assert pretender.value.code == "invalid_file"


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Onboarding guide", 0)
    paragraph = document.add_paragraph("Step 1:\tcreate an account")
    paragraph.add_run().add_break()
    paragraph.add_run("then verify your \u00e9-mail")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Plan"
    table.cell(0, 1).text = "Price"
    table.cell(1, 0).text = "Team"
    table.cell(1, 1).text = "$20"
    document.add_paragraph("Questions go to the help desk.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_docx_paragraphs_tables_tabs_and_breaks_in_order() -> None:
    result = extract_text(make_docx(), "guide.docx", DOCX_TYPE)
    assert result.kind == "docx" and result.page_starts == ()
    assert result.text.splitlines() == [
        "Onboarding guide", "Step 1:\tcreate an account", "then verify your \u00e9-mail",
        "Plan", "Price", "Team", "$20", "Questions go to the help desk.",
    ]
    assert extract_text(make_docx(), "guide", None).kind == "docx"  # by its bytes


def test_other_zips_are_unsupported_and_damaged_docx_invalid() -> None:
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    with pytest.raises(UnreadableFile) as xlsx:
        extract_text(out.getvalue(), "sheet.xlsx", None)
    assert xlsx.value.code == "unsupported_file"
    with pytest.raises(UnreadableFile) as claimed:
        extract_text(out.getvalue(), "doc.docx", DOCX_TYPE)
    assert claimed.value.code == "invalid_file"
    broken = io.BytesIO()
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("word/document.xml", "<w:document><unclosed>")
    with pytest.raises(UnreadableFile) as bad_xml:
        extract_text(broken.getvalue(), "bad.docx", None)
    assert bad_xml.value.code == "invalid_file"


ARTICLE = b"""<!DOCTYPE html><html><head><title>Tide pools of the north coast</title></head><body>
<nav><a href="/">Home</a> | <a href="/shop">Shop</a> | <a href="/login">Log in</a></nav>
<div class="cookie-banner">We use cookies. Accept all cookies?</div>
<article><h1>Tide pools of the north coast</h1>
<p>Tide pools form where rocky shores trap seawater at low tide. They shelter anemones, sea stars and small
fish that must survive changing temperature and salinity twice a day.</p>
<p>The best time to visit is during a spring tide, when the water drops lowest and the pools are largest.
Walk only on bare rock and never lift animals from their pools.</p>
</article>
<footer>Copyright 2026 Coastal Guides. All rights reserved. Privacy policy. Terms of use.</footer>
</body></html>"""


def test_html_readable_text_without_boilerplate() -> None:
    result = extract_text(ARTICLE, "tides.html", "text/html; charset=utf-8")
    assert result.kind == "html" and result.title == "Tide pools of the north coast"
    assert "rocky shores trap seawater" in result.text and "spring tide" in result.text
    assert "Accept all cookies" not in result.text and "All rights reserved" not in result.text
    assert extract_text(ARTICLE, "page", None).kind == "html"  # sniffed


@pytest.mark.parametrize(("data", "name", "mime"), [
    (b"# Title\n\nSome *markdown*.", "README.md", None),
    (b"def f():\n    return 1\n", "f.py", "text/x-python"),
    (b'{"a": [1, 2]}', "data.json", "application/json"),
    (b"name,price\nTeam,20\n", "plans.csv", "text/csv"),
    ("\ufeffBOM and caf\u00e9".encode(), "bom.txt", "text/plain"),
    ("utf-16 text".encode("utf-16"), "wide.txt", None),
    (b"no name, no type", None, None),
])
def test_text_of_every_kind(data: bytes, name: str | None, mime: str | None) -> None:
    result = extract_text(data, name, mime)
    assert result.kind == "text"
    expected = data.decode("utf-16") if data.startswith(b"\xff\xfe") else data.decode("utf-8-sig")
    assert result.text == expected


@pytest.mark.parametrize(("data", "name", "mime", "code"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "photo.png", "image/png", "unsupported_file"),
    (b"ID3\x03\x00", "song.mp3", None, "unsupported_file"),
    (b"\x00\x01\x02binary", "blob.bin", None, "unsupported_file"),
    (b"\x00\x01\x02binary", "notes.txt", "text/plain", "invalid_file"),
    (b"caf\xe9 in latin-1", "latin.txt", None, "invalid_file"),
    (b"caf\xe9 in latin-1", "mystery", None, "unsupported_file"),
])
def test_unreadable_files_get_a_typed_error(data: bytes, name: str, mime: str | None, code: str) -> None:
    with pytest.raises(UnreadableFile) as caught:
        extract_text(data, name, mime)
    assert caught.value.code == code and caught.value.type == "invalid_request_error"
    assert name in caught.value.message


def test_max_chars_cuts_text_and_pages() -> None:
    result = extract_text(make_pdf(PAGES), "report.pdf", None, max_chars=40)
    assert len(result.text) == 40 and result.page_starts == (0,)


def test_media_types_from_names() -> None:
    assert guess_media_type("a.ts") == "text/x-typescript"  # not MPEG-TS
    assert guess_media_type("a.PDF") == "application/pdf"
    assert guess_media_type("photo.jpeg") == "image/jpeg"
    assert guess_media_type("noext") is None and guess_media_type(None) is None
