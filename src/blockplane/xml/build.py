"""A typed element builder (lxml's ``E`` factory has no type stubs)."""

from __future__ import annotations

from lxml import etree


def el(tag: str, *children: etree._Element | str, **attributes: str) -> etree._Element:
    """``el("disk", el("target", dev="vda"), type="file")``; a str child becomes the text."""
    element = etree.Element(tag, {k: v for k, v in attributes.items()})
    for child in children:
        if isinstance(child, str):
            element.text = child
        else:
            element.append(child)
    return element
