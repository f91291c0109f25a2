"""Render the README's picture of an annotated aCRF page (docs/acrf_dm_page.png).

    python3 docs/render_acrf_page.py            # from the repository root

Converts nothing: it draws the example study's aCRF (``cdisc-convert acrf``) into a temporary folder
and renders the Demographics page with PDFium (pypdfium2, a test dependency).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pypdfium2 as pdfium

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cdisc_convert.pipeline import run_acrf  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        acrf = run_acrf(REPO / "mappings" / "nct05948982", Path(tmp))
        page = acrf.form_pages["DM"]  # three domains, a topic condition, SUPPDM and [NOT SUBMITTED]
        image = pdfium.PdfDocument(str(acrf.pdf))[page - 1].render(scale=1.5).to_pil().convert("RGB")
        # the page's upper part: title, domain boxes and the first annotated fields
        image = image.crop((40, 40, image.width - 40, int(image.height * 0.54)))
        out = REPO / "docs" / "acrf_dm_page.png"
        image.save(out, optimize=True)
        print(f"{out} ({image.width}x{image.height}) from page {page} of {acrf.pdf.name}")


if __name__ == "__main__":
    main()
