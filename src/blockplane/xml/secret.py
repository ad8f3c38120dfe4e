"""The ``<secret>`` document of a libvirt secret holding a cephx key (usage type ceph).

Builds what it is given and decides nothing (which UUID, which usage name). The key itself is
never part of the document: it is set with ``virSecretSetValue``.
"""

from __future__ import annotations

from lxml import etree

from blockplane.xml.build import el


def ceph_secret_xml(uuid: str, usage_name: str, description: str) -> str:
    """A persistent, private secret: libvirt keeps it across restarts and never shows it."""
    secret = el(
        "secret",
        el("uuid", uuid),
        el("description", description),
        el("usage", el("name", usage_name), type="ceph"),
        ephemeral="no",
        private="yes",
    )
    return etree.tostring(secret, encoding="unicode")
