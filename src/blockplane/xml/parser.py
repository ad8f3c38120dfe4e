"""The one XML parser of blockplane: lxml, hardened.

Every document blockplane reads (libvirt's domain, checkpoint and capabilities XML) goes through
``parse_xml``: no network access, no entity expansion (so neither entity bombs nor external
files), no huge trees, and no DOCTYPE at all. Must not interpret a document: the modules beside
it map elements to the model, and nothing outside ``xml/`` (and ``hypervisor/``) parses XML.
"""

from __future__ import annotations

from lxml import etree

from blockplane.errors import InvalidInput

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def parse_xml(document: str | bytes, what: str = "domain") -> etree._Element:
    """The root element of ``document``; ``InvalidInput`` (``xml.invalid``) if it does not parse
    or carries a DOCTYPE. ``what`` names the document in the message."""
    data = document.encode() if isinstance(document, str) else document
    if b"<!doctype" in data.lower():
        raise InvalidInput(f"{what} XML must not carry a DOCTYPE", code="xml.invalid")
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as error:
        raise InvalidInput(f"{what} XML does not parse: {error}", code="xml.invalid") from error
