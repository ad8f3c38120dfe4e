"""blockplane.xml: libvirt XML <-> the model, read through one hardened parser (``parser``).

Builds and parses what it is given and decides nothing: which devices, limits or images a
domain gets is the business of the feature packages. Nothing outside ``xml/`` and
``hypervisor/`` parses XML.
"""
